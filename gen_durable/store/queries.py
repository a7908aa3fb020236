"""Read-only queries for operators: listing instances with filters, keyset-paginated."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, select

from gen_durable.store._common import NOW, I, run


def list_instances(
    conn: Connection,
    *,
    fsm: str | None = None,
    status: str | None = None,
    queue: str | None = None,
    step: str | None = None,
    correlation_key: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> Sequence[Row[Any]]:
    """Instances matching every given filter, newest first, ``limit`` at a time.

    Pass the last id of a page as ``before_id`` for the next one (keyset pagination: the
    cost of a page does not grow with how far back it is).
    """
    stmt = select(
        I.c.id,
        I.c.fsm,
        I.c.status,
        I.c.step,
        I.c.queue,
        I.c.priority,
        I.c.attempt,
        I.c.correlation_key,
        I.c.run_at,
        I.c.updated_at,
    )
    for column, value in (
        (I.c.fsm, fsm),
        (I.c.status, status),
        (I.c.queue, queue),
        (I.c.step, step),
        (I.c.correlation_key, correlation_key),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if before_id is not None:
        stmt = stmt.where(I.c.id < before_id)
    return run(conn, stmt.order_by(I.c.id.desc()).limit(limit)).all()


def counts(conn: Connection) -> Sequence[Row[Any]]:
    """Instances per queue and status."""
    stmt = (
        select(I.c.queue, I.c.status, func.count().label("n"))
        .group_by(I.c.queue, I.c.status)
        .order_by(I.c.queue, I.c.status)
    )
    return run(conn, stmt).all()


def step_counts(conn: Connection) -> Sequence[Row[Any]]:
    """Unfinished instances per queue, class, step and status."""
    stmt = (
        select(I.c.queue, I.c.fsm, I.c.step, I.c.status, func.count().label("n"))
        .where(I.c.finished_at.is_(None))
        .group_by(I.c.queue, I.c.fsm, I.c.step, I.c.status)
        .order_by(I.c.queue, I.c.fsm, I.c.step, I.c.status)
    )
    return run(conn, stmt).all()


THROUGHPUT_WINDOWS = (1, 5, 15)
"""Minutes over which :func:`throughput` counts finished instances."""


_WINDOWS = [
    func.count().filter(I.c.finished_at > NOW - timedelta(minutes=m)).label(f"last_{m}m")
    for m in THROUGHPUT_WINDOWS
]
_THROUGHPUT = (
    select(I.c.queue, I.c.status, *_WINDOWS)
    .where(I.c.finished_at > NOW - timedelta(minutes=max(THROUGHPUT_WINDOWS)))
    .group_by(I.c.queue, I.c.status)
    .order_by(I.c.queue, I.c.status)
)


def throughput(conn: Connection, now: datetime | None) -> Sequence[Row[Any]]:
    """Instances finished per queue and status over the last 1, 5 and 15 minutes (read
    through the index on ``finished_at``: the cost is the rows of the last 15 minutes)."""
    return run(conn, _THROUGHPUT, {"now": now}).all()
