"""Read-only statements behind the fleet views (``gen-durable workers``, ``queues``): the
runners with what they hold, and each queue's depth and oldest waiting row."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Float, cast, exists, func, select

from gen_durable.store import models
from gen_durable.store._common import NOW, I, N, run

L = models.leaders


class Runner(NamedTuple):
    """A runner row, with the leases it holds and whether it leads."""

    id: str
    hostname: str
    pid: int
    queues: Any
    """Its queues (a JSON object: name -> concurrency)."""
    supervisor: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_interval: float | None
    reaper_interval: float | None
    silent_for: float
    """Seconds since its last heartbeat, by the database's clock."""
    running: int
    """Instances running under a lease it holds."""
    leader: bool
    """It holds an unexpired leadership lease (only runners with cron schedules take one)."""


_HOLDER = I.alias("held")
_RUNNING = (
    select(func.count())
    .where(_HOLDER.c.status == "running", _HOLDER.c.lease_owner == N.c.id)
    .scalar_subquery()
)
_LEADS = exists().where(L.c.owner == N.c.id, L.c.expires_at > NOW)
_RUNNERS = select(
    *(N.c[name] for name in Runner._fields[:9]),
    cast(func.extract("epoch", NOW - N.c.heartbeat_at), Float).label("silent_for"),
    _RUNNING.label("running"),
    _LEADS.label("leader"),
).order_by(N.c.hostname, N.c.supervisor.nulls_first(), N.c.id)


def runners(conn: Connection, now: datetime | None) -> list[Runner]:
    """Every runner row (live or silent), grouped by host, then by supervisor."""
    return list(map(Runner._make, run(conn, _RUNNERS, {"now": now})))


def runner(conn: Connection, node_id: str, now: datetime | None) -> Runner | None:
    """One runner row, or None when it is not registered (stopped cleanly, or pruned)."""
    row = run(conn, _RUNNERS.where(N.c.id == node_id), {"now": now}).first()
    return None if row is None else Runner._make(row)


_SINCE = func.coalesce(I.c.run_at, I.c.created_at)
_WAITING = (
    select(I.c.queue, cast(func.extract("epoch", NOW - func.min(_SINCE)), Float).label("age"))
    .where(I.c.status == "available")
    .group_by(I.c.queue)
)


def oldest_waiting(conn: Connection, now: datetime | None) -> dict[str, float]:
    """Per queue with runnable rows: the seconds its oldest one has waited."""
    rows = run(conn, _WAITING, {"now": now}).mappings()
    return {row["queue"]: max(row["age"], 0.0) for row in rows}
