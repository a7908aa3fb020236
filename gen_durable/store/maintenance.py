"""Statements of the maintenance services: timers, the reaper, GC, runner heartbeats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Float,
    Row,
    case,
    cast,
    delete,
    exists,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.store import models
from gen_durable.store._common import NOW, I, N, param, run

H = models.history
R = models.reruns


_DUE = (
    select(I.c.id, (I.c.status == "awaiting").label("timed_out"), I.c.step)
    .where(
        I.c.status.in_(("scheduled", "awaiting")),
        I.c.run_at.is_not(None),
        I.c.run_at <= NOW,
    )
    .order_by(I.c.run_at)
    .limit(param("limit", "int"))
    .with_for_update(skip_locked=True)
)
_TIMED_OUT = I.c.status == "awaiting"
_STAGE_DUE = (
    update(I)
    # The ids locked by :data:`_DUE`, as an array: primary-key lookups (an ``IN
    # (subquery)`` or a join with the batch made the planner scan the whole table).
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)))
    .values(
        status="available",
        step=case((_TIMED_OUT, func.coalesce(I.c.timeout_step, I.c.step)), else_=I.c.step),
        await_names=case((_TIMED_OUT, None), else_=I.c.await_names),
        timeout_step=None,
        updated_at=NOW,
    )
    .returning(I.c.id, I.c.queue, I.c.fsm)
)


class Staged(NamedTuple):
    """A row :func:`stage_timers` made runnable."""

    queue: str
    id: int
    fsm: str
    timed_out: bool
    """An await whose timeout passed (else a scheduled row whose time came)."""
    awaited_step: str
    """Its step before: for a timed-out await, the step it would have resumed at."""


def stage_timers(conn: Connection, limit: int, now: datetime | None) -> list[Staged]:
    """Make due timers runnable: scheduled rows, and awaits whose timeout passed.

    An await that times out resumes at its ``timeout_step`` (or its ``then`` step) with
    an empty pack. The row lock (taken by the first of its two statements; the only one
    when nothing is due) decides the race with a signal: the signal's sender flips the
    row to available first, or this does — never both. The caller records the timeouts
    its history keeps (:func:`gen_durable.store.history.record_outside`) in the same
    transaction.
    """
    due = {row.id: row for row in run(conn, _DUE, {"limit": limit, "now": now})}
    if not due:
        return []
    staged = run(conn, _STAGE_DUE, {"ids": list(due), "now": now})
    return [Staged(r.queue, r.id, r.fsm, due[r.id].timed_out, due[r.id].step) for r in staged]


def stage_due(conn: Connection, limit: int, now: datetime | None) -> list[str]:
    """:func:`stage_timers`, returning the queue of each staged row (no history)."""
    return [row.queue for row in stage_timers(conn, limit, now)]


_HELD = I.alias("held")  # a self-read of the updated table, so an alias
_EXPIRED_ROWS = (
    select(_HELD.c.id, _HELD.c.lease_owner)
    .where(_HELD.c.status == "running", _HELD.c.lease_expires_at < NOW)
    .limit(param("limit", "int"))
    .with_for_update(skip_locked=True)
    .subquery("expired")
)
_EXHAUSTED = I.c.attempt >= I.c.max_attempts
_LOST = func.jsonb_build_object(
    "type",
    "LeaseExpired",
    "message",
    func.concat(
        "the worker running step ",
        I.c.step,
        " lost its lease (attempt ",
        I.c.attempt,
        " of ",
        I.c.max_attempts,
        ")",
    ),
    "step",
    I.c.step,
    "attempt",
    I.c.attempt,
)
_REAP = (
    update(I)
    .where(I.c.id == _EXPIRED_ROWS.c.id, I.c.status == "running")
    .values(
        status=case((_EXHAUSTED, "failed"), else_="available"),
        finished_at=case((_EXHAUSTED, NOW), else_=None),
        run_at=case((_EXHAUSTED, None), else_=NOW),
        error=_LOST,
        updated_at=NOW,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(
        I.c.id,
        I.c.status,
        I.c.queue,
        I.c.parent_id,
        I.c.concurrency_key,
        *(I.c.fsm, I.c.step, I.c.version, I.c.attempt),
        _EXPIRED_ROWS.c.lease_owner,  # whose lease expired: the value before this UPDATE
    )
)


def reap(conn: Connection, limit: int, now: datetime | None) -> Sequence[Row[Any]]:
    """Return expired leases: runnable again, or failed when attempts are used up.

    Returns (id, status, queue, parent_id, concurrency_key, fsm, step, version, attempt,
    lease_owner) of each reaped row, ``lease_owner`` the runner whose lease expired. The
    caller records the re-runs (:func:`gen_durable.store.history.record_reruns`) and
    counts the children failed here against their parents in the same transaction
    (:func:`gen_durable.store.children.finish`).
    """
    return run(conn, _REAP, {"limit": limit, "now": now}).all()


_AGED = I.alias("aged")
_PARENT = I.alias("parent")
_GARBAGE = select(_AGED.c.id).where(
    _AGED.c.finished_at.is_not(None),
    _AGED.c.finished_at < NOW - param("retention", "interval"),
    or_(
        _AGED.c.parent_id.is_(None),
        ~exists().where(_PARENT.c.id == _AGED.c.parent_id, _PARENT.c.finished_at.is_(None)),
    ),
)
"""Finished instances past retention, but never a child whose parent is unfinished.

Aliased: :data:`_COLLECT_GARBAGE` reads it inside its DELETE of the same table."""

_VICTIMS = _GARBAGE.limit(param("limit", "int")).with_for_update(skip_locked=True).scalar_subquery()
_GONE = delete(I).where(I.c.id.in_(_VICTIMS)).returning(I.c.id).cte("gone")
# One statement: the history goes exactly with its instances (no foreign key to cascade).
_GONE_HISTORY = delete(H).where(H.c.instance_id.in_(select(_GONE.c.id))).cte("history")
_GONE_RERUNS = delete(R).where(R.c.instance_id.in_(select(_GONE.c.id))).cte("reruns")
_COLLECT_GARBAGE = select(func.count()).select_from(_GONE).add_cte(_GONE_HISTORY, _GONE_RERUNS)
_COUNT_GARBAGE = select(func.count()).select_from(_GARBAGE.subquery())


def collect_garbage(
    conn: Connection, retention_seconds: float, limit: int, now: datetime | None
) -> int:
    """Delete finished instances past retention, with their history (signals cascade).

    Never a child whose parent is unfinished. Returns how many instances were deleted.
    """
    params = {"retention": timedelta(seconds=retention_seconds), "limit": limit, "now": now}
    return int(run(conn, _COLLECT_GARBAGE, params).scalar_one())


def count_garbage(conn: Connection, retention_seconds: float, now: datetime | None) -> int:
    """How many instances :func:`collect_garbage` would delete now, in all its batches."""
    params = {"retention": timedelta(seconds=retention_seconds), "now": now}
    return int(run(conn, _COUNT_GARBAGE, params).scalar_one())


_NEW_NODE = pg_insert(N).values(
    id=param("id", "text"),
    hostname=param("hostname", "text"),
    pid=param("pid", "int"),
    queues=cast(param("queues", "text"), JSONB),
    fsms=param("fsms", "text", is_array=True),
    started_at=NOW,
    heartbeat_at=NOW,
    supervisor=param("supervisor", "text"),
    heartbeat_interval=param("heartbeat_interval", "float"),
    reaper_interval=param("reaper_interval", "float"),
    known=cast(param("known", "text"), JSONB),
)
_UPSERT_NODE = _NEW_NODE.on_conflict_do_update(
    index_elements=[N.c.id],
    set_={
        "heartbeat_at": NOW,
        "fsms": _NEW_NODE.excluded.fsms,
        "known": _NEW_NODE.excluded.known,
    },
)


def upsert_node(
    conn: Connection,
    node_id: str,
    hostname: str,
    pid: int,
    queues: dict[str, int],
    fsms: Sequence[str],
    now: datetime | None,
    supervisor: str | None = None,
    *,
    heartbeat_interval: float | None = None,
    reaper_interval: float | None = None,
    known: Any = None,
) -> None:
    """Record (or refresh) a runner: its queues, the classes it knows, the supervisor
    that started it (None: started on its own) and the seconds between its heartbeats and
    its reaper's passes (what its silence and a lapsed lease are judged against); ``known``:
    per class, the state versions and steps its code knows (``gen-durable why`` and
    ``ls --stuck`` read it during a rolling deploy)."""
    params = {
        "id": node_id,
        "hostname": hostname,
        "pid": pid,
        "queues": json.dumps(queues),
        "fsms": list(fsms),
        "now": now,
        "supervisor": supervisor,
        "heartbeat_interval": heartbeat_interval,
        "reaper_interval": reaper_interval,
        "known": None if known is None else json.dumps(known),
    }
    run(conn, _UPSERT_NODE, params)


class NodeInfo(NamedTuple):
    """A runner as ``gen-durable workers`` shows it."""

    id: str
    supervisor: str | None
    """The supervisor that started it (``gen-durable run --processes N``); None: on its own."""
    hostname: str
    pid: int
    queues: Any
    """Its queues (a JSON object: name -> concurrency)."""
    fsms: list[str]
    started_at: datetime
    heartbeat_at: datetime
    silent_for: float
    """Seconds since its last heartbeat, by the database's clock."""


_LIST_NODES = select(
    *(N.c[name] for name in NodeInfo._fields[:-1]),
    cast(func.extract("epoch", NOW - N.c.heartbeat_at), Float).label("silent_for"),
).order_by(N.c.hostname, N.c.supervisor.nulls_first(), N.c.id)


def list_nodes(conn: Connection, now: datetime | None) -> list[NodeInfo]:
    """Every runner row (live or silent), grouped by host, then by supervisor."""
    return list(map(NodeInfo._make, run(conn, _LIST_NODES, {"now": now})))


_TOUCH_NODE = update(N).where(N.c.id == param("id", "text")).values(heartbeat_at=NOW)


def touch_node(conn: Connection, node_id: str, now: datetime | None) -> bool:
    """Refresh a runner's heartbeat; False if its row is gone (pruned as dead)."""
    result = run(conn, _TOUCH_NODE, {"id": node_id, "now": now})
    return result.rowcount > 0


def delete_node(conn: Connection, node_id: str) -> None:
    """Forget a runner that stopped cleanly."""
    run(conn, delete(N).where(N.c.id == node_id))


_PRUNE_NODES = delete(N).where(N.c.heartbeat_at < NOW - param("age", "interval"))


def prune_nodes(conn: Connection, older_than_seconds: float, now: datetime | None) -> int:
    """Forget runners whose heartbeat is older than the given age."""
    result = run(conn, _PRUNE_NODES, {"age": timedelta(seconds=older_than_seconds), "now": now})
    return result.rowcount
