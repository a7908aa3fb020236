"""New rows: one INSERT builder for every way an instance is born.

``insert``, ``insert_all``, signal-with-start, cron and a Spawn's children all hand over
:class:`~gen_durable.domain.insert_spec.InsertSpec` records. The statements' columns come from the
record's fields (those marked with a column kind) plus ``fsm`` and ``step``; the rows
travel as one JSON parameter (``json_to_recordset``), each state as jsonb inside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import Connection, Row, case, func, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.store import notify
from gen_durable.store._common import INSTANCE_IDS, NOW, TSZ, ZERO, I, param, recordset_param, run

FIELDS: dict[str, str] = {
    "fsm": "text",
    "step": "text",
    **{f.name: f.metadata["column"] for f in attrs.fields(InsertSpec) if "column" in f.metadata},
}
"""Each column the record gives (name -> kind), in the order of its fields."""

_ROWS = recordset_param("rows", id="bigint", **FIELDS, error="jsonb")
_DUE = func.coalesce(
    _ROWS.c.run_at, NOW + func.coalesce(func.make_interval(0, 0, 0, 0, 0, 0, _ROWS.c.delay), ZERO)
)
# ``delay`` is not a column: it becomes ``run_at``, as do the times the INSERT computes.
_COPIED = [name for name in FIELDS if name in I.c and name != "run_at"]


def _insert(*, with_id: bool, failed: bool = False) -> Any:
    values: dict[str, Any] = {name: _ROWS.c[name] for name in _COPIED}
    if with_id:
        values["id"] = _ROWS.c.id
    if failed:  # born failed: a finished row takes no part in the key's uniqueness
        values |= {
            "run_at": literal(None, TSZ),
            "status": literal("failed"),
            "error": _ROWS.c.error,
            "finished_at": NOW,
        }
    else:
        values |= {"run_at": _DUE, "status": case((_DUE > NOW, "scheduled"), else_="available")}
    values |= {"created_at": NOW, "updated_at": NOW}
    stmt = pg_insert(I).from_select(list(values), select(*values.values()))
    if not failed:
        stmt = stmt.on_conflict_do_nothing(
            index_elements=[I.c.correlation_key], index_where=I.c.finished_at.is_(None)
        )
    return stmt.returning(I.c.id, I.c.status, I.c.queue)


_ONE = _insert(with_id=False).cte("ins")
_INSERT_ONE_AND_WAKE = select(_ONE.c.id, func.pg_notify(param("channel", "text"), _ONE.c.queue))
"""The single insert is a web request's: one statement that also wakes the runners of its
queue (when the caller commits), and none when a live correlation key wins."""
_INSERT_ROWS = _insert(with_id=True)
_INSERT_FAILED = _insert(with_id=True, failed=True)
_IDS = select(INSTANCE_IDS.next_value()).select_from(func.generate_series(1, param("count", "int")))


def encode(
    specs: Sequence[InsertSpec],
    ids: Sequence[int] | None = None,
    errors: Sequence[Any] | None = None,
) -> str:
    """The rows' JSON parameter: each record's columns, with its drawn id and error."""
    rows = []
    for index, spec in enumerate(specs):
        row = {name: getattr(spec, name) for name in FIELDS}
        if ids is not None:
            row["id"] = ids[index]
        if errors is not None:
            row["error"] = errors[index]
        rows.append(row)
    return json.dumps(rows, ensure_ascii=False, allow_nan=False, default=_moment)


def _moment(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


def allocate_ids(conn: Connection, count: int) -> list[int]:
    """Draw ``count`` ids from the instances' sequence, ascending."""
    if count <= 0:
        return []
    return sorted(run(conn, _IDS, {"count": count}).scalars())


def insert_one(conn: Connection, spec: InsertSpec, now: datetime | None) -> int | None:
    """Insert one instance and wake its queue; None when an unfinished instance holds its
    correlation key (nothing written, nobody woken)."""
    params = {"rows": encode([spec]), "now": now, "channel": notify.channel()}
    found: int | None = run(conn, _INSERT_ONE_AND_WAKE, params).scalar_one_or_none()
    return found


def insert_many(
    conn: Connection, specs: Sequence[InsertSpec], now: datetime | None
) -> list[int | None]:
    """Insert many instances in one statement; None where a live key already exists.

    Ids are drawn from the table's sequence first, so each input row knows its own id
    without relying on the order of RETURNING.
    """
    ids = allocate_ids(conn, len(specs))
    inserted = {row.id for row in insert_rows(conn, specs, ids, now)}
    return [i if i in inserted else None for i in ids]


def insert_rows(
    conn: Connection, specs: Sequence[InsertSpec], ids: Sequence[int], now: datetime | None
) -> Sequence[Row[Any]]:
    """Insert rows under ids already drawn; (id, status, queue) of those inserted (a row
    whose correlation key an unfinished instance holds is left out)."""
    return run(conn, _INSERT_ROWS, {"rows": encode(specs, ids), "now": now}).all()


def insert_failed(
    conn: Connection,
    specs: Sequence[InsertSpec],
    ids: Sequence[int],
    errors: Sequence[Any],
    now: datetime | None,
) -> None:
    """Insert rows born failed, each with its error (JSON)."""
    run(conn, _INSERT_FAILED, {"rows": encode(specs, ids, errors), "now": now})
