"""Read-only queries for operators: listing instances with filters, keyset-paginated."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import Connection, func, select

from gen_durable.store import upgrades
from gen_durable.store._common import NOW, I, run


class ListedInstance(NamedTuple):
    """An instance as a listing shows it."""

    id: int
    fsm: str
    status: str
    step: str
    queue: str
    priority: int
    attempt: int
    correlation_key: str | None
    run_at: datetime | None
    updated_at: datetime


_LISTED = select(*(I.c[name] for name in ListedInstance._fields))


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
    stuck: bool = False,
) -> list[ListedInstance]:
    """Instances matching every given filter, newest first, ``limit`` at a time.

    Pass the last id of a page as ``before_id`` for the next one (keyset pagination: the
    cost of a page does not grow with how far back it is).
    """
    stmt = _LISTED
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
    if stuck:  # parked by a failing upgrade, or at a step or version no live runner knows
        stmt = stmt.where(upgrades.stuck())
    return list(map(ListedInstance._make, run(conn, stmt.order_by(I.c.id.desc()).limit(limit))))


class StatusCount(NamedTuple):
    """How many instances of a queue have a status."""

    queue: str
    status: str
    n: int


_COUNTS = (
    select(I.c.queue, I.c.status, func.count().label("n"))
    .group_by(I.c.queue, I.c.status)
    .order_by(I.c.queue, I.c.status)
)


def counts(conn: Connection) -> list[StatusCount]:
    """Instances per queue and status."""
    return list(map(StatusCount._make, run(conn, _COUNTS)))


class StepCount(NamedTuple):
    """How many unfinished instances of a queue and class are at a step, with a status."""

    queue: str
    fsm: str
    step: str
    status: str
    n: int


_STEP_COUNTS = (
    select(I.c.queue, I.c.fsm, I.c.step, I.c.status, func.count().label("n"))
    .where(I.c.finished_at.is_(None))
    .group_by(I.c.queue, I.c.fsm, I.c.step, I.c.status)
    .order_by(I.c.queue, I.c.fsm, I.c.step, I.c.status)
)


def step_counts(conn: Connection) -> list[StepCount]:
    """Unfinished instances per queue, class, step and status."""
    return list(map(StepCount._make, run(conn, _STEP_COUNTS)))


THROUGHPUT_WINDOWS = (1, 5, 15)
"""Minutes over which :func:`throughput` counts finished instances."""


class Throughput(NamedTuple):
    """Instances of a queue that finished with a status in each of :data:`THROUGHPUT_WINDOWS`
    (a field ``last_<m>m`` per window, in the same order)."""

    queue: str
    status: str
    last_1m: int
    last_5m: int
    last_15m: int


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


def throughput(conn: Connection, now: datetime | None) -> list[Throughput]:
    """Instances finished per queue and status over the last 1, 5 and 15 minutes (read
    through the index on ``finished_at``: the cost is the rows of the last 15 minutes)."""
    return list(map(Throughput._make, run(conn, _THROUGHPUT, {"now": now})))
