"""Wake-up notifications: a channel per schema, the queue name as payload."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Text, cast, func, select

from gen_durable import models
from gen_durable.store._common import array, param, run


def channel(schema: str | None = None) -> str:
    """The notification channel of a gen_durable schema (payload: a queue name)."""
    return f"{schema or models.schema_name()}_wakeup"


def finished_channel(schema: str | None = None) -> str:
    """The channel that announces finished instances (payload: an instance id)."""
    return f"{schema or models.schema_name()}_finished"


def notify_finished(conn: Connection, instance_ids: Iterable[int]) -> None:
    """Announce finished instances (delivered when the caller commits)."""
    ids = sorted(set(instance_ids))
    if ids:
        x = func.unnest(array(ids, "bigint")).table_valued("id").render_derived(name="x")
        run(conn, select(func.pg_notify(finished_channel(), cast(x.c.id, Text))).select_from(x))


_QUEUE = func.unnest(param("queues", "text", is_array=True)).table_valued("q").render_derived()
_NOTIFY = select(func.pg_notify(param("channel", "text"), _QUEUE.c.q)).select_from(_QUEUE)


def notify(conn: Connection, queues: Iterable[str]) -> None:
    """Send one wake-up per distinct queue (delivered when the caller commits)."""
    distinct = sorted(set(queues))
    if not distinct:
        return
    run(conn, _NOTIFY, {"channel": channel(), "queues": distinct})


def listen(
    conn: psycopg.Connection[object], schema: str | None = None, *, finished: bool = False
) -> None:
    """LISTEN on the schema's wake-up (or finished) channel, on an autocommit connection."""
    name = finished_channel(schema) if finished else channel(schema)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
