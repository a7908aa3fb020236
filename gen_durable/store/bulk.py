"""Statements of bulk actions: the instances a filter matches, counted, sampled and walked
in keyset batches (by id) under a bound fixed when the action was previewed."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Connection, Select, func, select, update
from sqlalchemy.dialects.postgresql import array as pg_array

from gen_durable.store._common import I, param, run
from gen_durable.store.audit import A, AuditRecord


class Where(NamedTuple):
    """What a bulk action's instances match (every given field; None: any)."""

    statuses: tuple[str, ...]
    """The statuses the action can act on (narrowed by the filter's own status)."""
    fsm: str | None = None
    step: str | None = None
    queue: str | None = None
    updated_before: datetime | None = None
    """Last changed before this moment (the filter's ``older_than``, made absolute)."""
    key_prefix: str | None = None
    """The correlation key starts with it (matched literally: ``%`` and ``_`` are text)."""


def _clauses(where: Where) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [I.c.status.in_(where.statuses)]
    for column, value in ((I.c.fsm, where.fsm), (I.c.step, where.step), (I.c.queue, where.queue)):
        if value is not None:
            clauses.append(column == value)
    if where.updated_before is not None:
        clauses.append(I.c.updated_at < where.updated_before)
    if where.key_prefix is not None:
        clauses.append(I.c.correlation_key.startswith(where.key_prefix, autoescape=True))
    return clauses


def _matching(*columns: Any, where: Where) -> Select[Any]:
    return select(*columns).where(*_clauses(where))


def preview(conn: Connection, where: Where, sample: int) -> tuple[int, int, list[int]]:
    """(how many match, the highest matching id or 0, the ``sample`` lowest ids)."""
    totals = _matching(func.count().label("n"), func.max(I.c.id).label("bound"), where=where)
    found = run(conn, totals).mappings().one()
    count, bound = found["n"], found["bound"]
    ids = run(conn, _matching(I.c.id, where=where).order_by(I.c.id).limit(sample)).scalars()
    return int(count), int(bound or 0), list(ids)


def batch(conn: Connection, where: Where, after: int, bound: int, limit: int) -> list[int]:
    """The next ``limit`` matching ids above ``after`` and at most ``bound``, ascending."""
    stmt = _matching(I.c.id, where=where).where(I.c.id > after, I.c.id <= bound)
    return list(run(conn, stmt.order_by(I.c.id).limit(limit)).scalars())


_LOCKED = select(*(A.c[name] for name in AuditRecord._fields)).with_for_update()
_PROGRESS = (
    update(A)
    .where(A.c.id == param("id", "bigint"))
    .values(
        details=func.jsonb_set(
            func.jsonb_set(
                A.c.details, pg_array(["last_id"]), func.to_jsonb(param("last", "bigint"))
            ),
            pg_array(["finished"]),
            func.to_jsonb(param("finished", "bool")),
        )
    )
)


def lock_audit_row(conn: Connection, audit_id: int) -> AuditRecord | None:
    """The audit row ``audit_id``, locked until the caller's transaction ends (one batch
    of a bulk action at a time), or None."""
    row = run(conn, _LOCKED.where(A.c.id == param("id", "bigint")), {"id": audit_id}).first()
    return None if row is None else AuditRecord._make(row)


def save_progress(conn: Connection, audit_id: int, last_id: int, finished: bool) -> None:
    """Record in a bulk action's audit row how far it went (the id it resumes after)."""
    run(conn, _PROGRESS, {"id": audit_id, "last": last_id, "finished": finished})
