"""The hot statements' way to the server: rendered once, prepared, sent by psycopg itself.

SQLAlchemy Core builds the statements (with the schema token translated in), but running
them through ``Connection.execute`` costs more Python per call than the server spends on
them. Here each statement is compiled once per schema to psycopg's parameter style and
executed on the connection's driver connection, inside the same transaction, as a
server-side prepared statement (unless the connection was created with
``prepare_threshold=None``, as behind PgBouncer in transaction pooling). SQLAlchemy's
``before_cursor_execute``/``after_cursor_execute`` listeners still see every statement.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from psycopg import RawCursor
from psycopg.pq import ExecStatus, TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Executable
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.sql.elements import ClauseElement

from gen_durable.store import models

_DIALECT = pg_dialect.dialect()  # type: ignore[no-untyped-call]
_lock = threading.Lock()
_Key = tuple[int, str, tuple[int, ...]]
_Rendered = tuple[Executable, str, dict[str, Any], str, tuple[str, ...]]
_rendered: dict[_Key, _Rendered] = {}
_inline: dict[int, tuple[str, ...]] = {}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def inline(stmt: Executable, *names: str) -> Executable:
    """Have the int parameters ``names`` of ``stmt`` written into its SQL text.

    For a claim's LIMIT: as a parameter, a generic plan estimates it at a tenth of the
    table and may sort the whole backlog; as a literal, each value is a statement (and a
    prepared plan) of its own, with the right estimate. Use it for parameters with few
    distinct values only.
    """
    _inline[id(stmt)] = names
    return stmt


def _literal(value: Any) -> str:
    """SQL text of one of a statement's own constants (never of a caller's value)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''").replace("%", "%%") + "'"
    if isinstance(value, timedelta):
        return f"'{value.total_seconds()!r} seconds'::interval"
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]"
    raise TypeError(f"no literal for the constant {value!r} of a hot statement")


def _render(stmt: Executable, params: Mapping[str, Any] | None = None) -> _Rendered:
    """The statement, its SQL for the configured schema and its remaining parameters; and
    the same SQL with PostgreSQL's own ``$n`` placeholders, with the parameters' names in
    ``$n`` order.

    The statement's own constants (``status = 'available'``) are written into the text,
    so that a generic plan can still prove a partial index's predicate; only the
    caller's values (``p_`` parameters) stay parameters. The ``$n`` form is sent as it
    is (psycopg's raw cursor): psycopg would otherwise parse the text of every statement
    longer than its cache takes (4 KiB) on every execution, as long as the claim's.
    """
    names = _inline.get(id(stmt), ())
    values = tuple(_inline_value(params, name) for name in names)
    schema = models.schema_name()
    key = (id(stmt), schema, values)
    hit = _rendered.get(key)
    if hit is None:
        assert isinstance(stmt, ClauseElement)
        compiled = stmt.compile(
            dialect=_DIALECT,
            schema_translate_map=models.translate_map(),
            render_schema_translate=True,
        )
        if "POSTCOMPILE" in compiled.string:
            raise TypeError("a hot statement cannot expand IN lists; use = ANY(array)")
        constants = dict(compiled.params)
        constants.update({f"p_{n}": v for n, v in zip(names, values, strict=True)})

        def write(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("p_") and name[2:] not in names:
                return match.group(0)
            return _literal(constants[name])

        sql = _PLACEHOLDER.sub(write, compiled.string)
        remaining = {n: None for n in _PLACEHOLDER.findall(sql)}
        order = tuple(remaining)
        raw = _PLACEHOLDER.sub(lambda m: f"${order.index(m.group(1)) + 1}", sql)
        # The statement is kept in the entry so that its id is never reused.
        hit = (stmt, sql, remaining, raw.replace("%%", "%"), order)
        with _lock:
            _rendered[key] = hit
    return hit


def _inline_value(params: Mapping[str, Any] | None, name: str) -> int:
    value = (params or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"the inlined parameter {name!r} must be an int, got {value!r}")
    return value


Call = tuple[Executable, Mapping[str, Any] | None]
"""A prebuilt statement and its parameters (by unprefixed name)."""


def execute(
    conn: Connection, stmt: Executable, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Run a prebuilt statement in ``conn``'s transaction; rows as named tuples.

    ``params`` are given by unprefixed name, as for :func:`gen_durable.store._common.run`.
    """
    return pipelined(conn, [(stmt, params)])[0]


def prepares(conn: Connection) -> bool:
    """Whether ``conn`` sends its statements as server-side prepared ones (not with
    ``prepare_threshold=None``, as behind PgBouncer in transaction pooling)."""
    return _prepares(conn.connection.driver_connection)


def _prepares(driver: Any) -> bool:
    return getattr(driver, "prepare_threshold", 0) is not None


def committed(
    conn: Connection, stmt: Executable, params: Mapping[str, Any] | None = None
) -> list[Any]:
    """Run a prebuilt statement as a transaction of its own, committed as it completes
    (one round trip: no BEGIN, no COMMIT). ``conn``'s transaction must not have begun
    on the server; the statements after this one begin it as usual."""
    driver = conn.connection.driver_connection
    assert driver is not None
    if driver.info.transaction_status != TransactionStatus.IDLE:
        raise RuntimeError("a statement committed on its own needs an idle connection")
    driver.autocommit = True
    try:
        return pipelined(conn, [(stmt, params)])[0]
    finally:
        if not driver.closed:  # else setting it would raise, hiding why the statement failed
            driver.autocommit = False


def pipelined(conn: Connection, calls: Sequence[Call]) -> list[list[Any]]:
    """Run statements in ``conn``'s transaction in one network round trip (psycopg's
    pipeline mode; the transaction's BEGIN, when it is the first, travels with them).

    Returns each statement's rows. An error in any of them raises once all were sent;
    the transaction is then aborted and the caller's ``begin()`` block rolls it back.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    prepare = _prepares(driver)
    events = conn._has_events or conn.engine._has_events
    sent = []
    sql, bound = "", {}
    try:
        with contextlib.ExitStack() as stack:
            # Leaving the pipeline sends its one Sync and collects every result; a sync()
            # before that would cost a second round trip for the exit's own Sync.
            with (
                driver.pipeline()
                if len(calls) > 1
                or (
                    driver.info.transaction_status == TransactionStatus.IDLE
                    and not driver.autocommit
                )
                else contextlib.nullcontext()
            ):
                for stmt, params in calls:
                    _, sql, defaults, raw, order = _render(stmt, params)
                    bound = dict(defaults)
                    if params:
                        for key, value in params.items():
                            bound[f"p_{key}"] = value
                    cur: Any = stack.enter_context(RawCursor(driver, row_factory=namedtuple_row))
                    if events:
                        given_sql, given_bound = sql, bound
                        for fn in conn.dispatch.before_cursor_execute:
                            sql, bound = fn(conn, cur, sql, bound, None, False)
                        if sql is not given_sql or bound is not given_bound:
                            # A listener rewrote it: send its version, as psycopg's.
                            cur = stack.enter_context(driver.cursor(row_factory=namedtuple_row))
                            raw = ""
                    if raw:
                        cur.execute(raw, [bound[n] for n in order], prepare=prepare)
                    else:
                        cur.execute(sql, bound, prepare=prepare)
                    sent.append((cur, sql, bound))
            out = []
            for cur, sql, bound in sent:
                result = cur.pgresult
                rows = result is not None and result.status == ExecStatus.TUPLES_OK
                out.append(cur.fetchall() if rows else [])
                if events:
                    for fn in conn.dispatch.after_cursor_execute:
                        fn(conn, cur, sql, bound, None, False)
    except Exception as exc:
        # As SQLAlchemy would: wrapped in its DBAPIError family (callers catch those),
        # and the connection invalidated if the error says it is gone.
        conn._handle_dbapi_exception(exc, sql, bound, None, None)
        raise
    return out
