"""Queue settings every runner obeys: pause and resume, a global concurrency limit."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, exists, func, select
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.store import models
from gen_durable.store._common import NOW, I, param, run

Q = models.queues

NOT_PAUSED = ~exists().where(Q.c.name == param("queue", "text"), Q.c.paused)
"""The claim's condition: its queue (the ``queue`` parameter) is not paused.

Uncorrelated on purpose: evaluated once per claim, it leaves the planner free to walk
the picker's index in order and stop at the LIMIT (a correlated one made it read and sort
the whole backlog)."""


# An alias: the claim evaluates this inside its UPDATE of the same table, where the bare
# name would read as a correlation (tests/store/test_statement_guard.py).
_BUSY = I.alias("busy")
_RUNNING = (
    select(func.count())
    .where(_BUSY.c.queue == param("queue", "text"), _BUSY.c.status == "running")
    .scalar_subquery()
)
ALLOWANCE = func.coalesce(
    select(Q.c.concurrency_limit - _RUNNING)
    .where(Q.c.name == param("queue", "text"), Q.c.concurrency_limit.is_not(None))
    .scalar_subquery(),
    param("limit", "int"),
)
"""How many rows a claim may lease: its ``limit``, or what the queue's global concurrency
limit leaves (its running rows, across every runner, are counted)."""

UNLIMITED = ~exists().where(Q.c.name == param("queue", "text"), Q.c.concurrency_limit.is_not(None))
"""The queue (the ``queue`` parameter) has no global concurrency limit: a claim may lease
its rows without :data:`LOCK_LIMITED` first."""

LOCK_LIMITED = (
    select(Q.c.name)
    .where(Q.c.name == param("queue", "text"), Q.c.concurrency_limit.is_not(None))
    .with_for_update()
)
"""Serialises the claims of a queue that has a global concurrency limit (locks nothing
otherwise). Sent before the claim in the same transaction: the claim's snapshot, taken
after the lock was granted, counts every running row the previous holder committed."""


def _upsert(column: str, kind: str) -> Insert:
    """Set one setting of a queue (``name``), creating its row if it has none."""
    value = param(column, kind)
    insert = pg_insert(Q).values({"name": param("name", "text"), column: value, "updated_at": NOW})
    update = {column: value, "updated_at": NOW}
    return insert.on_conflict_do_update(index_elements=[Q.c.name], set_=update)


_SET_LIMIT = _upsert("concurrency_limit", "int")
_SET_PAUSED = _upsert("paused", "bool")


def set_limit(conn: Connection, name: str, limit: int | None, now: datetime | None) -> None:
    """Set (or, with None, remove) the global concurrency limit of a queue."""
    run(conn, _SET_LIMIT, {"name": name, "concurrency_limit": limit, "now": now})


def set_paused(conn: Connection, name: str, paused: bool, now: datetime | None) -> None:
    """Pause or resume a queue (in the caller's transaction)."""
    run(conn, _SET_PAUSED, {"name": name, "paused": paused, "now": now})


class QueueSettings(NamedTuple):
    """A queue's stored settings."""

    name: str
    paused: bool
    concurrency_limit: int | None
    updated_at: datetime


_SETTINGS = select(*(Q.c[name] for name in QueueSettings._fields)).order_by(Q.c.name)


def settings(conn: Connection) -> list[QueueSettings]:
    """Every queue with stored settings, by name."""
    return list(map(QueueSettings._make, run(conn, _SETTINGS)))
