"""Wake-up notifications: a channel per schema, the queue name as payload."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Text, cast, func, select, union_all

from gen_durable.store import _fast, models
from gen_durable.store._common import param, run


def channel(schema: str | None = None) -> str:
    """The notification channel of a gen_durable schema (payload: a queue name)."""
    return f"{schema or models.schema_name()}_wakeup"


def finished_channel(schema: str | None = None) -> str:
    """The channel that announces finished instances (payload: an instance id)."""
    return f"{schema or models.schema_name()}_finished"


_QUEUE = func.unnest(param("queues", "text", is_array=True)).table_valued("q").render_derived()
_WAKE = select(func.pg_notify(param("channel", "text"), _QUEUE.c.q).label("sent")).select_from(
    _QUEUE
)
_ID = func.unnest(param("ids", "bigint", is_array=True)).table_valued("id").render_derived()
_FINISHED = select(
    func.pg_notify(param("finished_channel", "text"), cast(_ID.c.id, Text)).label("sent")
).select_from(_ID)
_BOTH = union_all(_WAKE, _FINISHED)


def notify_finished(conn: Connection, instance_ids: Iterable[int]) -> None:
    """Announce finished instances (delivered when the caller commits)."""
    ids = sorted(set(instance_ids))
    if ids:
        run(conn, _FINISHED, {"finished_channel": finished_channel(), "ids": ids})


def notify(conn: Connection, queues: Iterable[str]) -> None:
    """Send one wake-up per distinct queue (delivered when the caller commits)."""
    distinct = sorted(set(queues))
    if not distinct:
        return
    run(conn, _WAKE, {"channel": channel(), "queues": distinct})


def announce(conn: Connection, queues: Iterable[str], instance_ids: Iterable[int]) -> None:
    """Wake-ups of ``queues`` and the finish of ``instance_ids`` in one statement (on an
    autocommit connection, one round trip)."""
    params = {
        "channel": channel(),
        "queues": sorted(set(queues)),
        "finished_channel": finished_channel(),
        "ids": sorted(set(instance_ids)),
    }
    _fast.execute(conn, _BOTH, params)


def listen(
    conn: psycopg.Connection[object], schema: str | None = None, *, finished: bool = False
) -> None:
    """LISTEN on the schema's wake-up (or finished) channel, on an autocommit connection."""
    name = finished_channel(schema) if finished else channel(schema)
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
