"""The operator audit (``gd_audit``): retries, cancels, pauses, prunes and CLI signals.

Each row is written in the transaction of the action it records, so it exists exactly
when the action committed. Rows are never deleted by GC: the record of who did what
outlives the instances it touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    cast,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import array as pg_array

from gen_durable.domain import serialization
from gen_durable.store import models
from gen_durable.store._common import NOW, param, run, unnest_params

A = models.audit


_RECORD = (
    insert(A)
    .values(
        at=NOW,
        action=param("action", "text"),
        target=param("target", "text"),
        instance_id=param("instance_id", "bigint"),
        actor=param("actor", "text"),
        details=cast(param("details", "text"), JSONB),
    )
    .returning(A.c.id)
)


def record(
    conn: Connection,
    action: str,
    *,
    target: int | str | None = None,
    instance_id: int | None = None,
    actor: str | None = None,
    details: Any = None,
    now: datetime | None = None,
) -> int:
    """Write one audit row in the caller's transaction; returns its id."""
    params = {
        "action": action,
        "target": None if target is None else str(target),
        "instance_id": instance_id,
        "actor": actor,
        "details": None if details is None else serialization.dumps(details),
        "now": now,
    }
    return int(run(conn, _RECORD, params).scalar_one())


_ENTRIES = unnest_params(target="text", instance_id="bigint")
_RECORD_MANY = insert(A).from_select(
    ["at", "action", "target", "instance_id", "actor"],
    select(
        NOW,
        param("action", "text"),
        _ENTRIES.c.target,
        _ENTRIES.c.instance_id,
        param("actor", "text"),
    ),
)


def record_each(
    conn: Connection,
    action: str,
    entries: Sequence[tuple[int | str, int]],
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> None:
    """One audit row per (target, instance id) of ``entries``, in one statement: an action
    taken on many instances at once, recorded as the single action records each."""
    if entries:
        params = {
            "action": action,
            "target": [str(target) for target, _ in entries],
            "instance_id": [instance_id for _, instance_id in entries],
            "actor": actor,
            "now": now,
        }
        run(conn, _RECORD_MANY, params)


_KEY = param("key", "text")
_COUNT = func.coalesce(cast(A.c.details.op("->>")(_KEY), BigInteger), 0)
_ADD_COUNT = (
    update(A)
    .where(A.c.id == param("id", "bigint"))
    .values(
        details=func.jsonb_set(
            func.coalesce(A.c.details, func.jsonb_build_object()),
            pg_array([_KEY]),
            func.to_jsonb(_COUNT + param("by", "bigint")),
        )
    )
)


def add_count(conn: Connection, audit_id: int, key: str, by: int) -> None:
    """Add ``by`` to the number under ``key`` in a row's details (a prune's running total)."""
    run(conn, _ADD_COUNT, {"id": audit_id, "key": key, "by": by})


class AuditRecord(NamedTuple):
    """One row of ``gd_audit`` (its columns, in order)."""

    id: int
    at: datetime
    action: str
    target: str | None
    instance_id: int | None
    actor: str | None
    details: Any


_LISTING = select(*(A.c[name] for name in AuditRecord._fields))


def listing(
    conn: Connection,
    *,
    action: str | None = None,
    target: str | None = None,
    actor: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditRecord]:
    """Audit rows matching every given filter, newest first (keyset-paginated by id).

    ``target`` matches the target as given (a key, a queue) or the instance it resolved to.
    """
    stmt = _LISTING
    if action is not None:
        stmt = stmt.where(A.c.action == action)
    if actor is not None:
        stmt = stmt.where(A.c.actor == actor)
    if target is not None:
        match = A.c.target == target
        by_id = target.isdigit() and len(target) < 19  # an instance id fits a bigint
        stmt = stmt.where(or_(match, A.c.instance_id == int(target)) if by_id else match)
    if before_id is not None:
        stmt = stmt.where(A.c.id < before_id)
    return list(map(AuditRecord._make, run(conn, stmt.order_by(A.c.id.desc()).limit(limit))))
