"""Queue settings every runner obeys: pause and resume."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, exists, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable import models
from gen_durable.store._common import db_now, param, run

Q = models.queues

NOT_PAUSED = ~exists().where(Q.c.name == param("queue", "text"), Q.c.paused)
"""The claim's condition: its queue (the ``queue`` parameter) is not paused.

Uncorrelated on purpose: evaluated once per claim, it leaves the planner free to walk
the picker's index in order and stop at the LIMIT (a correlated one made it read and sort
the whole backlog)."""


def set_paused(conn: Connection, name: str, paused: bool, now: datetime | None) -> None:
    """Pause or resume a queue (in the caller's transaction)."""
    t_now = db_now(now)
    insert = pg_insert(Q).values(name=name, paused=paused, updated_at=t_now)
    run(
        conn,
        insert.on_conflict_do_update(
            index_elements=[Q.c.name], set_={"paused": paused, "updated_at": t_now}
        ),
    )


def settings(conn: Connection) -> Sequence[Row[Any]]:
    """Every queue with stored settings: (name, paused, updated_at)."""
    return run(conn, select(Q.c.name, Q.c.paused, Q.c.updated_at).order_by(Q.c.name)).all()
