"""Statements behind :mod:`gen_durable.testing`: moving durable time, finding work, reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, select, update

from gen_durable.store import models
from gen_durable.store._common import I, param, run

_SHIFT = (
    update(I)
    .where(I.c.status.in_(("scheduled", "awaiting")), I.c.run_at.is_not(None))
    .values(run_at=I.c.run_at - param("by", "interval"))
)


def shift_timers(conn: Connection, by: Any) -> int:
    """Move every pending due time (delays, Sleeps, backoffs, await timeouts) ``by`` earlier.

    ``by`` is a ``timedelta``. Returns how many instances were moved. The database's
    clock is the only clock stored times are compared with, so this is how a test lets
    durable time pass.
    """
    return run(conn, _SHIFT, {"by": by}).rowcount


_RUNNABLE_QUEUES = (
    select(I.c.queue)
    .where(I.c.status == "available", I.c.fsm == func.any(param("fsms", "text", is_array=True)))
    .distinct()
    .order_by(I.c.queue)
)


def runnable_queues(conn: Connection, fsms: Sequence[str]) -> list[str]:
    """Queues holding runnable instances of these classes, by name."""
    return list(run(conn, _RUNNABLE_QUEUES, {"fsms": list(fsms)}).scalars())


class Inserted(NamedTuple):
    """An instance with the fields ``assert_inserted`` matches on."""

    id: int
    fsm: str
    status: str
    step: str
    state: Any
    queue: str
    priority: int
    correlation_key: str | None
    concurrency_key: str | None
    max_attempts: int
    parent_id: int | None


_OF_CLASS = (
    select(*(I.c[name] for name in Inserted._fields))
    .where(I.c.fsm == param("fsm", "text"))
    .order_by(I.c.id)
    .limit(param("limit", "int"))
)


def instances_of(conn: Connection, fsm: str, limit: int) -> list[Inserted]:
    """The first ``limit`` instances of one class, oldest first."""
    return list(map(Inserted._make, run(conn, _OF_CLASS, {"fsm": fsm, "limit": limit})))


_PER_CLASS = select(I.c.fsm, func.count().label("n")).group_by(I.c.fsm).order_by(I.c.fsm)


def count_per_class(conn: Connection) -> dict[str, int]:
    """How many instances each class has."""
    return {row.fsm: row.n for row in run(conn, _PER_CLASS).all()}


def delete_everything(conn: Connection) -> None:
    """Delete every row of every gen_durable table (the schema and its version stay)."""
    for table in reversed(models.metadata.sorted_tables):
        run(conn, delete(table))
