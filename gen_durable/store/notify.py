"""Wake-up notifications: a channel per schema, the queue name as payload."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql
from sqlalchemy import Connection, func, select

from gen_durable import models
from gen_durable.store._common import run


def channel(schema: str | None = None) -> str:
    """The notification channel of a gen_durable schema."""
    return f"{schema or models.schema_name()}_wakeup"


def notify(conn: Connection, queues: Iterable[str]) -> None:
    """Send one wake-up per distinct queue (delivered when the caller commits)."""
    distinct = sorted(set(queues))
    if not distinct:
        return
    name = channel()
    run(conn, select(*(func.pg_notify(name, q) for q in distinct)))


def listen(conn: psycopg.Connection[object], schema: str | None = None) -> None:
    """LISTEN on the schema's channel (on a dedicated autocommit psycopg connection)."""
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(schema))))


def notify_raw(
    conn: psycopg.Connection[object], queues: Iterable[str], schema: str | None = None
) -> None:
    """Send wake-ups on a raw psycopg connection (the runtime's out-of-band notifier)."""
    name = channel(schema)
    for q in sorted(set(queues)):
        conn.execute("SELECT pg_notify(%s, %s)", (name, q))
