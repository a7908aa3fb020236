"""Signals: ``signal`` stores one in the caller's transaction, wakes its instance, and
can start the instance it addresses (signal-with-start)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import Connection

from gen_durable import events, faults, store, tracing
from gen_durable.client import targets
from gen_durable.client.insert import check_window, emit_insert
from gen_durable.client.targets import Bind, check_actor, check_target, connection, not_found
from gen_durable.domain import serialization
from gen_durable.domain.definitions import Definition, resolve
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.errors import InvalidTransition, NotFound, ValidationError
from gen_durable.types import JSON, SignalResult


def _check_signal_name(name: object) -> str:
    return serialization.check_signal_name(name)


StartSpec = InsertSpec | type[Definition] | tuple[type[Definition] | str, Any]
"""What ``signal(..., start=...)`` accepts: ``Cls.new(...)``, a class, or ``(Cls, state)``."""


def signal(
    bind: Bind,
    target: int | str,
    name: str,
    payload: JSON = None,
    *,
    idempotency_key: str | None = None,
    start: StartSpec | None = None,
    dedup_window: float | None = None,
    actor: str | None = None,
    now: datetime | None = None,
) -> SignalResult:
    """Send signal ``name`` to an instance (by id, or by correlation key) in the caller's
    transaction.

    The signal is stored even if the instance is not awaiting it yet; an instance
    awaiting it becomes runnable. A key with no unfinished instance raises
    :class:`NotFound` — unless ``start`` says what to create: then the instance is
    inserted with that key and receives the signal, atomically (signal-with-start; under
    concurrent calls there is one instance). ``dedup_window`` makes an instance with the
    key that finished within the window count as the live one. A repeated
    ``idempotency_key`` for the same instance is stored once and reported as ``duplicate``.

    With ``actor`` (an operator sending it by hand), the signal is also recorded in the
    audit table; signals an application sends, without ``actor``, are not.
    """
    targets.check_now(now)
    target = check_target(target)
    _check_signal_name(name)
    check_actor(actor)
    check_window(dedup_window)
    if idempotency_key is not None:
        serialization.check_text(idempotency_key, "idempotency_key")
    spec = _start_spec(start, target) if start is not None else None
    body = serialization.dumps(serialization.unstructure(payload, "signal payload"))
    conn = connection(bind)
    row = store.instances.lock_target(conn, target)
    started = False
    if row is None and isinstance(target, str) and (spec is not None or dedup_window):
        row, started = _live_or_started(conn, target, spec, dedup_window, now)
    if row is None:
        raise NotFound(not_found(target, live=True))
    signal_id, duplicate = store.signals.insert_signal(
        conn, row.id, name, body, idempotency_key, now
    )
    if faults.active is not None:
        faults.hit("signal", conn)
    if actor is not None:
        details = {"name": name, "signal_id": signal_id, "duplicate": duplicate}
        store.audit.record(
            conn, "signal", target=target, instance_id=row.id, actor=actor, details=details, now=now
        )
    if not duplicate and row.status == "awaiting":
        woke = store.signals.wake_satisfied(conn, [row.id], now)
        store.notify.notify(conn, [w.queue for w in woke])
    events.emit(
        "signal",
        instance_id=row.id,
        queue=row.queue,
        signal=name,
        signal_id=signal_id,
        duplicate=duplicate,
        started=started,
    )
    return SignalResult(
        signal_id=signal_id, instance_id=row.id, duplicate=duplicate, started=started
    )


def _start_spec(start: StartSpec, target: int | str) -> InsertSpec:
    if not isinstance(target, str):
        raise ValidationError("signal-with-start addresses its instance by correlation key")
    if isinstance(start, InsertSpec):
        if start.correlation_key not in (None, target):
            raise ValidationError(
                f"start has correlation key {start.correlation_key!r}, the signal {target!r}"
            )
        return attrs.evolve(start, correlation_key=target)
    if isinstance(start, tuple) and len(start) != 2:
        raise ValidationError("start takes Cls.new(...), a class, or a (class, state) pair")
    cls, value = start if isinstance(start, tuple) else (start, None)
    resolved = resolve(cls)
    as_args = resolved._gd_kind == "job"
    return InsertSpec.build(
        resolved,
        state=None if as_args else value,
        args=value if as_args else None,
        correlation_key=target,
    )


def _live_or_started(
    conn: Connection,
    key: str,
    spec: InsertSpec | None,
    dedup_window: float | None,
    now: datetime | None,
) -> tuple[Any, bool]:
    """The row a signal-with-start delivers to (locked), and whether it was created."""
    if dedup_window is not None:
        recent = store.instances.recently_finished_by_key(conn, [key], dedup_window, now)
        if key in recent:
            return store.instances.lock_target(conn, recent[key]), False
    if spec is None:
        return None, False
    for _attempt in range(5):
        trace = tracing.current()
        new_row = spec if trace is None else attrs.evolve(spec, trace_context=trace)
        new_id = store.inserts.insert_one(conn, new_row, now)
        if new_id is not None:
            emit_insert([new_row], [(new_id, True)])
            return store.instances.lock_target(conn, new_id), True
        # Another caller inserted the key first (and committed): deliver to theirs.
        row = store.instances.lock_target(conn, key)
        if row is not None:
            return row, False
    raise InvalidTransition(f"correlation key {key!r} kept changing hands; try again")
