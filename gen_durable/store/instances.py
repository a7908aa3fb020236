"""Statements that look up, debounce, cancel and retry instances (client API side).

New rows are inserted by :mod:`gen_durable.store.inserts`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, case, cast, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import JSONB

from gen_durable.store._common import FINISHED, NOW, I, S, param, run, seconds

_LIVE_BY_KEY = select(I.c.correlation_key, I.c.id).where(
    I.c.correlation_key == func.any(param("keys", "text", is_array=True)),
    I.c.finished_at.is_(None),
)


def live_ids_by_key(conn: Connection, keys: Sequence[str]) -> dict[str, int]:
    """The unfinished instance of each correlation key that has one."""
    rows = run(conn, _LIVE_BY_KEY, {"keys": list(keys)}).all()
    return {row.correlation_key: row.id for row in rows}


_RECENTLY_FINISHED = (
    select(I.c.correlation_key, func.max(I.c.id).label("id"))
    .where(
        I.c.correlation_key == func.any(param("keys", "text", is_array=True)),
        I.c.finished_at.is_not(None),
        I.c.finished_at > NOW - param("window", "interval"),
    )
    .group_by(I.c.correlation_key)
)


def recently_finished_by_key(
    conn: Connection, keys: Sequence[str], window_seconds: float, now: datetime | None
) -> dict[str, int]:
    """The newest instance of each key that finished within the last ``window_seconds``."""
    params = {"keys": list(keys), "window": timedelta(seconds=window_seconds), "now": now}
    rows = run(conn, _RECENTLY_FINISHED, params).all()
    return {row.correlation_key: row.id for row in rows}


def debounce(
    conn: Connection,
    instance_id: int,
    delay: float,
    max_wait: float | None,
    state: str | None,
    now: datetime | None,
) -> bool:
    """Push back the start of an instance that has not started yet (debounce).

    Its start moves to ``delay`` seconds from now, never beyond ``max_wait`` after it was
    first inserted; ``state`` (JSON text) replaces its state when given. False if it
    has already started.
    """
    due = NOW + seconds(delay)
    if max_wait is not None:
        due = func.least(due, I.c.created_at + seconds(max_wait))
    values: dict[str, Any] = {
        "run_at": due,
        "status": case((due > NOW, "scheduled"), else_="available"),
        "updated_at": NOW,
    }
    if state is not None:
        values["state"] = cast(literal(state), JSONB)
    stmt = (
        update(I)
        .where(
            I.c.id == instance_id,
            I.c.status.in_(("scheduled", "available")),
            I.c.version == 0,
            I.c.attempt == 0,
        )
        .values(**values)
        .returning(I.c.id)
    )
    return run(conn, stmt, {"now": now}).scalar_one_or_none() is not None


class Target(NamedTuple):
    """The instance a target names, as :func:`lock_target` locked it."""

    id: int
    status: str
    queue: str
    correlation_key: str | None
    finished_at: datetime | None


_TARGET = select(*(I.c[name] for name in Target._fields))


def lock_target(conn: Connection, target: int | str) -> Target | None:
    """Lock the instance a target names (id, or the live instance of a key)."""
    if isinstance(target, int):
        stmt = _TARGET.where(I.c.id == target)
    else:
        stmt = _TARGET.where(I.c.correlation_key == target, I.c.finished_at.is_(None))
    row = run(conn, stmt.with_for_update()).one_or_none()
    return None if row is None else Target._make(row)


def resolve_read(conn: Connection, target: int | str) -> int | None:
    """The id a read addresses: the id itself, or a key's live (else newest) instance."""
    if isinstance(target, int):
        found = run(conn, select(I.c.id).where(I.c.id == target)).scalar_one_or_none()
    else:
        found = run(
            conn,
            select(I.c.id)
            .where(I.c.correlation_key == target)
            .order_by(I.c.finished_at.is_(None).desc(), I.c.finished_at.desc(), I.c.id.desc())
            .limit(1),
        ).scalar_one_or_none()
    return found


class InstanceRecord(NamedTuple):
    """One whole row of ``gd_instances`` (its columns, in order)."""

    id: int
    fsm: str
    queue: str
    priority: int
    status: str
    step: str
    state: Any
    version: int
    attempt: int
    max_attempts: int
    run_at: datetime | None
    correlation_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    rate_key: str | None
    rate_weight: float | None
    lease_token: uuid.UUID | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    await_names: list[str] | None
    await_all: bool
    await_limit: int | None
    timeout_step: str | None
    await_pack: list[int] | None
    result: Any
    error: Any
    parent_id: int | None
    pending_children: int
    join_policy: str | None
    children_from: int | None
    trace_context: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    state_version: int


_INSTANCE = select(*(I.c[name] for name in InstanceRecord._fields))


def fetch(conn: Connection, instance_id: int) -> InstanceRecord | None:
    """The whole row of one instance."""
    row = run(conn, _INSTANCE.where(I.c.id == instance_id)).one_or_none()
    return None if row is None else InstanceRecord._make(row)


class SignalRecord(NamedTuple):
    """One whole row of ``gd_signals`` (its columns, in order)."""

    id: int
    instance_id: int
    name: str
    payload: Any
    idempotency_key: str | None
    created_at: datetime
    consumed_at: datetime | None
    consumed_version: int | None


_SIGNALS = select(*(S.c[name] for name in SignalRecord._fields))


def fetch_signals(conn: Connection, instance_id: int) -> list[SignalRecord]:
    """Every signal of one instance, oldest first."""
    stmt = _SIGNALS.where(S.c.instance_id == instance_id).order_by(S.c.id)
    return list(map(SignalRecord._make, run(conn, stmt)))


CANCELLED: dict[str, Any] = {
    "status": "cancelled",
    "finished_at": NOW,
    "updated_at": NOW,
    "lease_token": None,
    "lease_owner": None,
    "lease_expires_at": None,
    "error": cast(param("error", "text"), JSONB),
}
"""What a cancel writes: the row finishes and its lease is revoked (its error is the
``error`` parameter, JSON text). What it awaited, the pack its step was given and its
``run_at`` stay, for a retry to resume them."""


class InstanceQueue(NamedTuple):
    """An instance a statement changed, and its queue (whose runners to wake)."""

    id: int
    queue: str


_CANCEL = (
    update(I)
    .where(I.c.id == param("id", "bigint"), I.c.finished_at.is_(None))
    .values(CANCELLED)
    .returning(I.c.id, I.c.queue)
)


def cancel(
    conn: Connection, instance_id: int, error: str, now: datetime | None
) -> InstanceQueue | None:
    """Cancel an unfinished instance and revoke its lease; None if it had finished."""
    row = run(conn, _CANCEL, {"id": instance_id, "error": error, "now": now}).one_or_none()
    return None if row is None else InstanceQueue._make(row)


class Retried(NamedTuple):
    """An instance a retry made unfinished again: its queue and the status it resumed in."""

    id: int
    queue: str
    status: str


# A cancelled instance resumes where the cancel found it: parked on an Await (with its
# deadline; the caller wakes it if its signals are already there), or scheduled until a
# Sleep, delay or backoff is over. Anything else runs its step now.
_CANCELLED_PARKED = and_(
    I.c.status == "cancelled", I.c.await_names.is_not(None), I.c.await_pack.is_(None)
)
_CANCELLED_SCHEDULED = and_(I.c.status == "cancelled", I.c.run_at > NOW)
_RETRY = (
    update(I)
    .where(
        I.c.id == func.any(param("ids", "bigint", is_array=True)),
        I.c.status.in_(("failed", "cancelled")),
    )
    .values(
        status=case(
            (_CANCELLED_PARKED, "awaiting"), (_CANCELLED_SCHEDULED, "scheduled"), else_="available"
        ),
        run_at=case((or_(_CANCELLED_PARKED, _CANCELLED_SCHEDULED), I.c.run_at), else_=NOW),
        attempt=0,
        finished_at=None,
        updated_at=NOW,
    )
    .returning(I.c.id, I.c.queue, I.c.status)
)


def retry(conn: Connection, ids: Sequence[int], now: datetime | None) -> list[Retried]:
    """Make the failed or cancelled ones of these instances unfinished again at their step,
    attempts reset, in one statement; the others are left alone (not returned).

    What a step awaited stays: a step that failed or was cancelled with a pack gets the
    same pack again, and an instance cancelled while parked on an ``Await`` is
    ``awaiting`` again (with its timeout's deadline), one cancelled while scheduled is
    ``scheduled`` until its time. Rows are locked in id order.
    """
    rows = run(conn, _RETRY, {"ids": sorted(ids), "now": now}).all()
    return sorted(map(Retried._make, rows))


__all__ = [
    "CANCELLED",
    "FINISHED",
    "InstanceQueue",
    "InstanceRecord",
    "Retried",
    "SignalRecord",
    "Target",
    "cancel",
    "debounce",
    "fetch",
    "fetch_signals",
    "live_ids_by_key",
    "lock_target",
    "recently_finished_by_key",
    "resolve_read",
    "retry",
]
