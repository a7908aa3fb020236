"""Shared pieces of the storage layer: tables, database time, typed array parameters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    ColumnElement,
    Connection,
    CursorResult,
    DateTime,
    Executable,
    Float,
    Integer,
    Interval,
    TableValuedAlias,
    Text,
    bindparam,
    cast,
    column,
    func,
    literal,
)
from sqlalchemy import (
    Sequence as DbSequence,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, UUID

from gen_durable import types
from gen_durable.store import models

I = models.instances  # noqa: E741 - the instances table, used in every statement
S = models.signals
N = models.nodes

TSZ = DateTime(timezone=True)
INSTANCE_IDS = DbSequence("gd_instances_id_seq", schema=models.SCHEMA_TOKEN)
"""The identity sequence behind ``gd_instances.id`` (pre-allocates ids for bulk inserts)."""

FINISHED = tuple(sorted(s.value for s in types.FINISHED))
SEP = "\x1f"
"""Separates signal names when a list of names travels as one text value."""

_ARRAY_TYPES: Mapping[str, Any] = {
    "bigint": BigInteger,
    "int": Integer,
    "text": Text,
    "bool": Boolean,
    "float": Float,
    "tsz": TSZ,
    "interval": Interval,
    "uuid": UUID(as_uuid=True),
    "jsonb": JSONB,
}


NOW: ColumnElement[datetime] = func.coalesce(bindparam("p_now", type_=TSZ), func.now())
"""The database's ``now()`` (or the ``now`` parameter) in prebuilt statements."""
ZERO = literal(timedelta(0), Interval)


def param(name: str, kind: str, *, is_array: bool = False) -> BindParameter[Any]:
    """A named bound parameter of a prebuilt statement (``is_array``: an array of ``kind``).

    Its key is prefixed (``p_``) so that it never collides with a column name in an
    UPDATE; :func:`run` adds the prefix to the parameters it is given.
    """
    type_ = _ARRAY_TYPES[kind]
    return bindparam(f"p_{name}", type_=ARRAY(type_) if is_array else type_)


def unnest_params(**columns: str) -> TableValuedAlias:
    """``unnest(:a, :b, ...) AS t(a, b, ...)`` over array parameters named like the columns."""
    fn = func.unnest(*(param(name, kind, is_array=True) for name, kind in columns.items()))
    cols = [column(name, _ARRAY_TYPES[kind]) for name, kind in columns.items()]
    return fn.table_valued(*cols).render_derived(name="t")


def recordset_param(name: str, **columns: str) -> TableValuedAlias:
    """``json_to_recordset(:name) AS t(a type, …)``: many rows as one bound JSON parameter.

    Cheaper to send than one array per column (see :func:`unnest_params`): the client
    encodes one JSON text in C instead of dumping every array element in Python.
    """
    fn = func.json_to_recordset(cast(param(name, "text"), JSON))
    cols = [column(col, _ARRAY_TYPES[kind]) for col, kind in columns.items()]
    return fn.table_valued(*cols).render_derived(name="t", with_types=True)


def seconds(value: float | None) -> ColumnElement[timedelta]:
    """A bound interval parameter."""
    return literal(None if value is None else timedelta(seconds=value), Interval)


def run(
    conn: Connection, stmt: Executable, params: Mapping[str, Any] | None = None
) -> CursorResult[Any]:
    """Execute with the configured schema translated in (``params`` by unprefixed name)."""
    bound = {f"p_{key}": value for key, value in params.items()} if params else None
    return conn.execute(
        stmt, bound, execution_options={"schema_translate_map": models.translate_map()}
    )
