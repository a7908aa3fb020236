"""Statements of the maintenance services: timers, the reaper, GC, runner heartbeats."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable import models
from gen_durable.store._common import I, N, array, db_now, run, seconds

H = models.history


def stage_due(conn: Connection, limit: int, now: datetime | None) -> list[str]:
    """Make due timers runnable: scheduled rows, and awaits whose timeout passed.

    An await that times out resumes at its ``timeout_step`` (or its ``then`` step) with
    an empty pack. The row lock decides the race with a signal: the signal's sender
    flips the row to available first, or this statement does — never both. Returns the
    queue of each staged row.
    """
    t_now = db_now(now)
    # The batch is a self-read of the updated table: an alias says so (the statement guard,
    # tests/test_statement_guard.py, refuses a bare one).
    pending = I.alias("pending")
    due = (
        select(pending.c.id)
        .where(
            pending.c.status.in_(("scheduled", "awaiting")),
            pending.c.run_at.is_not(None),
            pending.c.run_at <= t_now,
        )
        .order_by(pending.c.run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    timed_out = I.c.status == "awaiting"
    stmt = (
        update(I)
        # ``= ANY(ARRAY(...))`` keeps primary-key lookups: an ``IN (subquery)`` of up to
        # ``limit`` ids made the planner scan the whole table instead.
        .where(I.c.id == func.any(func.array(due)), I.c.status.in_(("scheduled", "awaiting")))
        .values(
            status="available",
            step=case((timed_out, func.coalesce(I.c.timeout_step, I.c.step)), else_=I.c.step),
            await_names=case((timed_out, None), else_=I.c.await_names),
            timeout_step=None,
            updated_at=t_now,
        )
        .returning(I.c.queue)
    )
    return list(run(conn, stmt).scalars())


def reap(conn: Connection, limit: int, now: datetime | None) -> Sequence[Row[Any]]:
    """Return expired leases: runnable again, or failed when attempts are used up.

    Returns (id, status, queue, parent_id) of each reaped row. The caller counts the
    children failed here against their parents in the same transaction
    (:func:`gen_durable.store.children.finish`).
    """
    t_now = db_now(now)
    held = I.alias("held")  # a self-read of the updated table, so an alias
    expired = (
        select(held.c.id)
        .where(held.c.status == "running", held.c.lease_expires_at < t_now)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    exhausted = I.c.attempt >= I.c.max_attempts
    lost = func.jsonb_build_object(
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
    stmt = (
        update(I)
        .where(I.c.id.in_(expired), I.c.status == "running")
        .values(
            status=case((exhausted, "failed"), else_="available"),
            finished_at=case((exhausted, t_now), else_=None),
            run_at=case((exhausted, None), else_=t_now),
            error=lost,
            updated_at=t_now,
            lease_token=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(I.c.id, I.c.status, I.c.queue, I.c.parent_id, I.c.concurrency_key)
    )
    return run(conn, stmt).all()


def _garbage(retention_seconds: float, now: datetime | None) -> Select[tuple[int]]:
    """Finished instances past retention, but never a child whose parent is unfinished.

    Aliased: :func:`collect_garbage` reads it inside its DELETE of the same table.
    """
    aged = I.alias("aged")
    parent = I.alias("parent")
    return select(aged.c.id).where(
        aged.c.finished_at.is_not(None),
        aged.c.finished_at < db_now(now) - seconds(retention_seconds),
        or_(
            aged.c.parent_id.is_(None),
            ~exists().where(parent.c.id == aged.c.parent_id, parent.c.finished_at.is_(None)),
        ),
    )


def collect_garbage(
    conn: Connection, retention_seconds: float, limit: int, now: datetime | None
) -> int:
    """Delete finished instances past retention, with their history (signals cascade).

    Never a child whose parent is unfinished. Returns how many instances were deleted.
    """
    victims = (
        _garbage(retention_seconds, now)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    gone = delete(I).where(I.c.id.in_(victims)).returning(I.c.id).cte("gone")
    # One statement: the history goes exactly with its instances (no foreign key to cascade).
    history = delete(H).where(H.c.instance_id.in_(select(gone.c.id))).cte("history")
    return int(run(conn, select(func.count()).select_from(gone).add_cte(history)).scalar_one())


def count_garbage(conn: Connection, retention_seconds: float, now: datetime | None) -> int:
    """How many instances :func:`collect_garbage` would delete now, in all its batches."""
    counted = select(func.count()).select_from(_garbage(retention_seconds, now).subquery())
    return int(run(conn, counted).scalar_one())


def upsert_node(
    conn: Connection,
    node_id: str,
    hostname: str,
    pid: int,
    queues: dict[str, int],
    fsms: Sequence[str],
    now: datetime | None,
) -> None:
    """Record (or refresh) a runner: its queues and the classes it knows."""
    t_now = db_now(now)
    stmt = pg_insert(N).values(
        id=node_id,
        hostname=hostname,
        pid=pid,
        queues=literal(json.dumps(queues)).cast(JSONB),
        fsms=array(list(fsms), "text"),
        started_at=t_now,
        heartbeat_at=t_now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[N.c.id], set_={"heartbeat_at": t_now, "fsms": stmt.excluded.fsms}
    )
    run(conn, stmt)


def touch_node(conn: Connection, node_id: str, now: datetime | None) -> bool:
    """Refresh a runner's heartbeat; False if its row is gone (pruned as dead)."""
    result = run(conn, update(N).where(N.c.id == node_id).values(heartbeat_at=db_now(now)))
    return result.rowcount > 0


def delete_node(conn: Connection, node_id: str) -> None:
    """Forget a runner that stopped cleanly."""
    run(conn, delete(N).where(N.c.id == node_id))


def prune_nodes(conn: Connection, older_than_seconds: float, now: datetime | None) -> int:
    """Forget runners whose heartbeat is older than the given age."""
    result = run(
        conn, delete(N).where(N.c.heartbeat_at < db_now(now) - seconds(older_than_seconds))
    )
    return result.rowcount
