"""Read-only statements behind :func:`gen_durable.explain`: why an instance is not running."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, select, tuple_

from gen_durable.store._common import NOW, I, N, S, param, run

_NOW = select(NOW)


def database_now(conn: Connection, now: datetime | None) -> datetime:
    """The database's clock (or ``now`` when given)."""
    value: datetime = run(conn, _NOW, {"now": now}).scalar_one()
    return value


class PendingSignal(NamedTuple):
    """The pending (unconsumed) signals of one name: how many, and the first one's id."""

    name: str
    n: int
    first: int


_PENDING = (
    select(S.c.name, func.count().label("n"), func.min(S.c.id).label("first"))
    .where(S.c.instance_id == param("id", "bigint"), S.c.consumed_at.is_(None))
    .group_by(S.c.name)
    .order_by(func.min(S.c.id))
)


def pending_signals(conn: Connection, instance_id: int) -> list[PendingSignal]:
    """(name, n, first) of the instance's pending signals, by first arrival."""
    return list(map(PendingSignal._make, run(conn, _PENDING, {"id": instance_id})))


_HOLDERS = (
    select(I.c.id)
    .where(I.c.status == "running", I.c.concurrency_key == param("key", "text"))
    .order_by(I.c.id)
    .limit(param("limit", "int"))
)


def key_holders(conn: Connection, key: str, limit: int = 100) -> list[int]:
    """Ids of the running instances that hold a concurrency key."""
    return list(run(conn, _HOLDERS, {"key": key, "limit": limit}).scalars())


_OWNER = I.alias("owner")
_WAITED_FOR = (
    select(I.c.id)
    .select_from(I.join(_OWNER, _OWNER.c.id == I.c.parent_id))
    .where(
        _OWNER.c.id == param("parent", "bigint"),
        I.c.id >= _OWNER.c.children_from,
        I.c.finished_at.is_(None),
    )
    .order_by(I.c.id)
    .limit(param("limit", "int"))
)


def unfinished_children(conn: Connection, parent_id: int, limit: int = 100) -> list[int]:
    """Ids of the unfinished children of the instance's latest Spawn."""
    return list(run(conn, _WAITED_FOR, {"parent": parent_id, "limit": limit}).scalars())


class LiveNode(NamedTuple):
    """A runner with a recent heartbeat, and what it serves."""

    id: str
    queues: Any
    """Its queues (a JSON object keyed by queue name)."""
    fsms: list[str]
    """The registry names of the classes it knows."""
    heartbeat_at: datetime
    known: Any = None
    """Per class, the state versions and steps its code knows (None: not recorded)."""


_LIVE_NODES = (
    select(*(N.c[name] for name in LiveNode._fields))
    .where(N.c.heartbeat_at > NOW - param("stale", "interval"))
    .order_by(N.c.id)
)


def live_nodes(conn: Connection, stale_after: Any, now: datetime | None) -> list[LiveNode]:
    """Runners whose heartbeat is more recent than ``stale_after`` (a ``timedelta``)."""
    return list(map(LiveNode._make, run(conn, _LIVE_NODES, {"stale": stale_after, "now": now})))


_AHEAD = select(func.count()).select_from(
    select(I.c.id)
    .where(
        I.c.queue == param("queue", "text"),
        I.c.status == "available",
        tuple_(I.c.priority, I.c.run_at, I.c.id)
        < tuple_(param("priority", "int"), param("run_at", "tsz"), param("id", "bigint")),
    )
    .limit(param("cap", "int"))
    .subquery()
)


def ahead_in_queue(
    conn: Connection, queue: str, priority: int, run_at: datetime | None, instance_id: int, cap: int
) -> int:
    """How many runnable instances a picker takes before this one (counted up to ``cap``)."""
    params = {"queue": queue, "priority": priority, "run_at": run_at, "id": instance_id}
    found: int = run(conn, _AHEAD, {**params, "cap": cap}).scalar_one()
    return found
