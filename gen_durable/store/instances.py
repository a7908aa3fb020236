"""Statements that create, look up, cancel and retry instances (client API side)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import Connection, Row, case, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.store import notify
from gen_durable.store._common import (
    FINISHED,
    INSTANCE_IDS,
    NOW,
    ZERO,
    I,
    S,
    array,
    db_now,
    param,
    run,
    seconds,
    unnest,
)


@attrs.frozen
class NewInstance:
    """One row to insert, already validated (state is JSON text)."""

    fsm: str
    queue: str
    priority: int
    step: str
    state: str
    max_attempts: int
    correlation_key: str | None = None
    delay: float | None = None
    run_at: datetime | None = None
    parent_id: int | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_key: str | None = None
    rate_weight: float | None = None
    trace_context: str | None = None


def _live_key_conflict() -> dict[str, Any]:
    return {"index_elements": [I.c.correlation_key], "index_where": I.c.finished_at.is_(None)}


_DUE = func.coalesce(param("run_at", "tsz"), NOW + func.coalesce(param("delay", "interval"), ZERO))
_INSERT_ONE = (
    pg_insert(I)
    .values(
        fsm=param("fsm", "text"),
        queue=param("queue", "text"),
        priority=param("priority", "int"),
        step=param("step", "text"),
        state=cast(param("state", "text"), JSONB),
        max_attempts=param("max_attempts", "int"),
        correlation_key=param("correlation_key", "text"),
        parent_id=param("parent_id", "bigint"),
        concurrency_key=param("concurrency_key", "text"),
        concurrency_limit=param("concurrency_limit", "int"),
        rate_key=param("rate_key", "text"),
        rate_weight=param("rate_weight", "float"),
        trace_context=param("trace_context", "text"),
        run_at=_DUE,
        status=case((_DUE > NOW, "scheduled"), else_="available"),
        created_at=NOW,
        updated_at=NOW,
    )
    .on_conflict_do_nothing(**_live_key_conflict())
    .returning(I.c.id, I.c.queue)
    .cte("ins")
)
_INSERT_ONE_AND_WAKE = select(
    _INSERT_ONE.c.id, func.pg_notify(param("channel", "text"), _INSERT_ONE.c.queue)
)
"""Prebuilt, so that SQLAlchemy compiles it once: the single insert is a web request's, one
statement that also wakes the runners of its queue (when the caller commits)."""


def insert_one(conn: Connection, row: NewInstance, now: datetime | None) -> int | None:
    """Insert one instance and wake its queue; None when an unfinished instance holds its
    correlation key (nothing written, nobody woken)."""
    params = attrs.asdict(row)
    params["delay"] = None if row.delay is None else timedelta(seconds=row.delay)
    params["now"] = now
    params["channel"] = notify.channel()
    found: int | None = run(conn, _INSERT_ONE_AND_WAKE, params).scalar_one_or_none()
    return found


def insert_many(
    conn: Connection, rows: Sequence[NewInstance], now: datetime | None
) -> list[int | None]:
    """Insert many instances in one statement; None where a live key already exists.

    Ids are drawn from the table's sequence first, so each input row knows its own id
    without relying on the order of RETURNING.
    """
    ids: list[int] = list(
        run(
            conn, select(INSTANCE_IDS.next_value()).select_from(func.generate_series(1, len(rows)))
        ).scalars()
    )
    t = unnest(
        id=(ids, "bigint"),
        fsm=([r.fsm for r in rows], "text"),
        queue=([r.queue for r in rows], "text"),
        priority=([r.priority for r in rows], "int"),
        step=([r.step for r in rows], "text"),
        state=([r.state for r in rows], "text"),
        max_attempts=([r.max_attempts for r in rows], "int"),
        correlation_key=([r.correlation_key for r in rows], "text"),
        parent_id=([r.parent_id for r in rows], "bigint"),
        concurrency_key=([r.concurrency_key for r in rows], "text"),
        concurrency_limit=([r.concurrency_limit for r in rows], "int"),
        rate_key=([r.rate_key for r in rows], "text"),
        rate_weight=([r.rate_weight for r in rows], "float"),
        trace_context=([r.trace_context for r in rows], "text"),
        run_at=([r.run_at for r in rows], "tsz"),
        delay=([None if r.delay is None else timedelta(seconds=r.delay) for r in rows], "interval"),
    )
    t_now = db_now(now)
    due = func.coalesce(t.c.run_at, t_now + func.coalesce(t.c.delay, seconds(0)))
    source = select(
        t.c.id,
        t.c.fsm,
        t.c.queue,
        t.c.priority,
        t.c.step,
        cast(t.c.state, JSONB),
        t.c.max_attempts,
        t.c.correlation_key,
        t.c.parent_id,
        t.c.concurrency_key,
        t.c.concurrency_limit,
        t.c.rate_key,
        t.c.rate_weight,
        t.c.trace_context,
        due,
        case((due > t_now, "scheduled"), else_="available"),
        t_now,
        t_now,
    )
    stmt = (
        pg_insert(I)
        .from_select(
            [
                "id",
                "fsm",
                "queue",
                "priority",
                "step",
                "state",
                "max_attempts",
                "correlation_key",
                "parent_id",
                "concurrency_key",
                "concurrency_limit",
                "rate_key",
                "rate_weight",
                "trace_context",
                "run_at",
                "status",
                "created_at",
                "updated_at",
            ],
            source,
        )
        .on_conflict_do_nothing(**_live_key_conflict())
        .returning(I.c.id)
    )
    inserted = set(run(conn, stmt).scalars())
    return [i if i in inserted else None for i in ids]


def live_ids_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    """The unfinished instance of each correlation key that has one."""
    rows = run(
        conn,
        select(I.c.correlation_key, I.c.id).where(
            I.c.correlation_key == func.any(array(keys, "text")), I.c.finished_at.is_(None)
        ),
    ).all()
    return {row.correlation_key: row.id for row in rows}


def recently_finished_by_key(
    conn: Connection, keys: Sequence[str], window_seconds: float, now: datetime | None
) -> dict[str, int]:
    """The newest instance of each key that finished within the last ``window_seconds``."""
    newest = func.max(I.c.id).label("id")
    rows = run(
        conn,
        select(I.c.correlation_key, newest)
        .where(
            I.c.correlation_key == func.any(array(keys, "text")),
            I.c.finished_at.is_not(None),
            I.c.finished_at > db_now(now) - seconds(window_seconds),
        )
        .group_by(I.c.correlation_key),
    ).all()
    return {row.correlation_key: row.id for row in rows}


def debounce(
    conn: Connection,
    instance_id: int,
    delay: float,
    max_wait: float | None,
    state: str | None,
    now: datetime | None,
) -> bool:
    """Push back the start of an instance that has not started yet (debounce).

    Its start moves to ``delay`` seconds from now, never beyond ``max_wait`` after it was
    first inserted; ``state`` (JSON text) replaces its state when given. False if it
    has already started.
    """
    t_now = db_now(now)
    due = t_now + seconds(delay)
    if max_wait is not None:
        due = func.least(due, I.c.created_at + seconds(max_wait))
    values: dict[str, Any] = {
        "run_at": due,
        "status": case((due > t_now, "scheduled"), else_="available"),
        "updated_at": t_now,
    }
    if state is not None:
        values["state"] = cast(literal(state), JSONB)
    stmt = (
        update(I)
        .where(
            I.c.id == instance_id,
            I.c.status.in_(("scheduled", "available")),
            I.c.version == 0,
            I.c.attempt == 0,
        )
        .values(**values)
        .returning(I.c.id)
    )
    return run(conn, stmt).scalar_one_or_none() is not None


def lock_target(conn: Connection, target: int | str) -> Row[Any] | None:
    """Lock the instance a target names (id, or the live instance of a key)."""
    stmt = select(I.c.id, I.c.status, I.c.queue, I.c.correlation_key, I.c.finished_at)
    if isinstance(target, int):
        stmt = stmt.where(I.c.id == target)
    else:
        stmt = stmt.where(I.c.correlation_key == target, I.c.finished_at.is_(None))
    return run(conn, stmt.with_for_update()).one_or_none()


def resolve_read(conn: Connection, target: int | str) -> int | None:
    """The id a read addresses: the id itself, or a key's live (else newest) instance."""
    if isinstance(target, int):
        found = run(conn, select(I.c.id).where(I.c.id == target)).scalar_one_or_none()
    else:
        found = run(
            conn,
            select(I.c.id)
            .where(I.c.correlation_key == target)
            .order_by(I.c.finished_at.is_(None).desc(), I.c.finished_at.desc(), I.c.id.desc())
            .limit(1),
        ).scalar_one_or_none()
    return found


def fetch(conn: Connection, instance_id: int) -> Row[Any] | None:
    """The whole row of one instance."""
    return run(conn, select(I).where(I.c.id == instance_id)).one_or_none()


def fetch_signals(conn: Connection, instance_id: int) -> Sequence[Row[Any]]:
    """Every signal of one instance, oldest first."""
    return run(conn, select(S).where(S.c.instance_id == instance_id).order_by(S.c.id)).all()


def cancel(conn: Connection, instance_id: int, error: str, now: datetime | None) -> Row[Any] | None:
    """Cancel an unfinished instance and revoke its lease; None if it had finished."""
    t_now = db_now(now)
    stmt = (
        update(I)
        .where(I.c.id == instance_id, I.c.finished_at.is_(None))
        .values(
            status="cancelled",
            finished_at=t_now,
            updated_at=t_now,
            run_at=None,
            lease_token=None,
            lease_owner=None,
            lease_expires_at=None,
            await_names=None,
            error=cast(literal(error), JSONB),
        )
        .returning(I.c.id, I.c.queue)
    )
    return run(conn, stmt).one_or_none()


def retry(conn: Connection, instance_id: int, now: datetime | None) -> Row[Any] | None:
    """Make a failed or cancelled instance runnable again at its step, attempts reset.

    What the step awaited stays: a step that failed with a pack gets the same pack again.
    """
    t_now = db_now(now)
    stmt = (
        update(I)
        .where(I.c.id == instance_id, I.c.status.in_(("failed", "cancelled")))
        .values(
            status="available",
            attempt=0,
            run_at=t_now,
            finished_at=None,
            updated_at=t_now,
        )
        .returning(I.c.id, I.c.queue)
    )
    return run(conn, stmt).one_or_none()


__all__ = [
    "FINISHED",
    "NewInstance",
    "cancel",
    "debounce",
    "fetch",
    "fetch_signals",
    "insert_many",
    "insert_one",
    "live_ids_by_key",
    "lock_target",
    "recently_finished_by_key",
    "resolve_read",
    "retry",
]
