"""Actions on instances and queues that already exist — cancel, retry, pause, limit — each
recorded in the audit table; and ``get``, the read-only snapshot.

Like the rest of the client API, every function works inside the caller's transaction
and never commits for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from gen_durable import store
from gen_durable.client import targets
from gen_durable.client.targets import Bind, check_actor, check_target, connection, not_found
from gen_durable.domain import registry, serialization
from gen_durable.errors import DuplicateInstance, InvalidTransition, NotFound, ValidationError
from gen_durable.store.history import OUTSIDE_CANCEL
from gen_durable.types import InstanceSnapshot, SignalInfo, Status

__all__ = ["cancel", "get", "pause_queue", "resume_queue", "retry", "set_queue_limit"]


def cancel(
    bind: Bind,
    target: int | str,
    reason: str = "cancelled",
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Cancel an unfinished instance and its unfinished descendants; False if it had
    already finished.

    A running step's lease is revoked at once: its commit is fenced out and what it
    wrote through ``ctx.session`` rolls back. A cancelled child counts as finished for
    its parent's join. A cancel that took effect is recorded in the audit table, with
    ``actor`` (None when not given), and in the transition history (kind
    ``outside_cancel``) when the instance's class keeps every transition.
    """
    targets.check_now(now)
    target = check_target(target)
    if not isinstance(reason, str):
        raise ValidationError("reason must be a string")
    check_actor(actor)
    error = serialization.dumps(
        serialization.unstructure({"type": "Cancel", "message": reason}, "reason")
    )
    conn = connection(bind)
    found = (
        target
        if isinstance(target, int)
        else store.instances.live_ids_by_key(conn, [target]).get(target)
    )
    row = store.instances.fetch(conn, found) if found is not None else None
    if row is None:
        if isinstance(target, str) and store.instances.resolve_read(conn, target) is not None:
            return False
        raise NotFound(not_found(target, live=isinstance(target, str)))
    if row.finished_at is not None:
        return False
    # Descendants first, then the instance, then its parent: children are always locked
    # before their parents. The second sweep catches a Spawn that landed in between.
    note = {"type": "Cancel", "message": f"ancestor {row.id} was cancelled: {reason}"}
    gone = list(store.children.cancel_descendants(conn, [row.id], note, now))
    if store.instances.cancel(conn, row.id, error, now) is None:
        return False
    outside = store.history.Outside(row.id, OUTSIDE_CANCEL, None, _records_all(row.fsm))
    store.history.record_outside(conn, [outside], now)
    gone.extend(store.children.cancel_descendants(conn, [row.id], note, now))
    if row.parent_id is not None:
        woken, siblings = store.children.finish(conn, [(row.parent_id, row.id, False)], now)
        store.notify.notify(conn, [w.queue for w in woken])
        gone.extend(siblings)
    if row.status == "running" and row.concurrency_key is not None:
        freed = store.concurrency.release(conn, [row.concurrency_key], now)
        store.notify.notify(conn, [f.queue for f in freed])
    store.notify.notify_finished(conn, [row.id, *(g.id for g in gone)])
    details = {"reason": reason, "descendants": len({g.id for g in gone})}
    store.audit.record(
        conn, "cancel", target=target, instance_id=row.id, actor=actor, details=details, now=now
    )
    return True


def _records_all(fsm: str) -> bool | None:
    """Whether the class keeps every transition in its history; None when this process
    cannot tell (not registered, or no ``history`` option of its own: the Runner's
    default decides, which only the instance's existing rows show)."""
    mode = getattr(registry.lookup(fsm), "history", None)
    return None if mode is None else mode == "all"


def retry(
    bind: Bind, target: int | str, *, actor: str | None = None, now: datetime | None = None
) -> int:
    """Run a failed or cancelled instance again from the step it ended at; returns its id.

    Attempts start over. A cancelled instance resumes where the cancel found it: parked on
    an ``Await`` it awaits again (and wakes once its signals are pending, those sent
    meanwhile included; its timeout keeps its deadline), a ``Sleep``, delay or backoff
    goes on until its time, and a step that had been given a pack gets the same pack.
    Raises :class:`InvalidTransition` for an instance that is not
    failed or cancelled, and :class:`DuplicateInstance` if another unfinished instance
    has taken its correlation key meanwhile. A retry is recorded in the audit table, with
    ``actor`` (None when not given).
    """
    targets.check_now(now)
    target = check_target(target)
    check_actor(actor)
    conn = connection(bind)
    instance_id = store.instances.resolve_read(conn, target)
    if instance_id is None:
        raise NotFound(not_found(target, live=False))
    try:
        with conn.begin_nested():
            rows = store.instances.retry(conn, [instance_id], now)
    except IntegrityError as exc:
        current = store.instances.fetch(conn, instance_id)
        key = current.correlation_key if current is not None else None
        holder = store.instances.live_ids_by_key(conn, [key]) if key else {}
        raise DuplicateInstance(key or "", holder.get(key or "", 0)) from exc
    if not rows:
        current = store.instances.fetch(conn, instance_id)
        status = current.status if current is not None else "missing"
        raise InvalidTransition(
            f"instance {instance_id} is {status}; only failed or cancelled ones can be retried"
        )
    _resume(conn, rows, {instance_id: target}, actor, now)
    return instance_id


def retry_each(
    bind: Bind, ids: Sequence[int], *, actor: str | None = None, now: datetime | None = None
) -> list[int]:
    """:func:`retry` of each of ``ids`` that is failed or cancelled, in a few statements for
    them all; returns those it retried (the others changed meanwhile, or are gone).

    An instance whose correlation key another unfinished instance has taken is left alone,
    as :func:`retry` would refuse it.
    """
    targets.check_now(now)
    check_actor(actor)
    conn = connection(bind)
    try:
        with conn.begin_nested():
            rows = store.instances.retry(conn, ids, now)
    except IntegrityError:  # a key was taken: one by one, to leave that one alone
        done = []
        for instance_id in ids:
            with contextlib.suppress(InvalidTransition, DuplicateInstance, NotFound):
                done.append(retry(conn, instance_id, actor=actor, now=now))
        return done
    _resume(conn, rows, {row.id: row.id for row in rows}, actor, now)
    return [row.id for row in rows]


def _resume(
    conn: Connection,
    rows: Sequence[store.instances.Retried],
    target_of: Mapping[int, int | str],
    actor: str | None,
    now: datetime | None,
) -> None:
    """What follows a retry of ``rows``: wakes, parents joining again, the audit."""
    # Resumed at their Await: signals sent while they were cancelled may satisfy it.
    awaiting = [row.id for row in rows if row.status == "awaiting"]
    if awaiting:
        store.signals.wake_satisfied(conn, awaiting, now)
    store.children.reopen(conn, [row.id for row in rows], now)  # parents join them again
    store.notify.notify(conn, sorted({row.queue for row in rows}))
    entries = [(target_of[row.id], row.id) for row in rows]
    store.audit.record_each(conn, "retry", entries, actor=actor, now=now)


def get(bind: Bind, target: int | str) -> InstanceSnapshot:
    """A read-only snapshot of an instance, with its signals.

    A correlation key resolves to its unfinished instance, else to the newest finished
    one.
    """
    target = check_target(target)
    conn = connection(bind)
    instance_id = store.instances.resolve_read(conn, target)
    row = store.instances.fetch(conn, instance_id) if instance_id is not None else None
    if row is None:
        raise NotFound(not_found(target, live=False))
    signals = tuple(
        SignalInfo(
            id=s.id,
            name=s.name,
            payload=s.payload,
            created_at=s.created_at,
            consumed_at=s.consumed_at,
            idempotency_key=s.idempotency_key,
        )
        for s in store.instances.fetch_signals(conn, row.id)
    )
    return InstanceSnapshot(
        id=row.id,
        fsm=row.fsm,
        status=Status(row.status),
        step=row.step,
        state=row.state,
        queue=row.queue,
        priority=row.priority,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        version=row.version,
        correlation_key=row.correlation_key,
        run_at=row.run_at,
        awaiting=tuple(row.await_names) if row.await_names is not None else None,
        result=row.result,
        error=row.error,
        parent_id=row.parent_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        signals=signals,
        children=tuple(store.children.ids_of(conn, row.id)),
    )


def _check_queue(name: object) -> str:
    return serialization.check_text(name, "a queue name")


def pause_queue(
    bind: Bind, queue: str, *, actor: str | None = None, now: datetime | None = None
) -> None:
    """Stop every runner from claiming in ``queue`` (when the caller commits).

    Steps already running finish; nothing new starts until :func:`resume_queue`. Recorded
    in the audit table, with ``actor`` (None when not given).
    """
    targets.check_now(now)
    check_actor(actor)
    conn = connection(bind)
    store.queues.set_paused(conn, _check_queue(queue), True, now)
    store.audit.record(conn, "pause", target=queue, actor=actor, now=now)


def resume_queue(
    bind: Bind, queue: str, *, actor: str | None = None, now: datetime | None = None
) -> None:
    """Let runners claim in ``queue`` again, and wake them (recorded like a pause)."""
    targets.check_now(now)
    check_actor(actor)
    conn = connection(bind)
    store.queues.set_paused(conn, _check_queue(queue), False, now)
    store.notify.notify(conn, [queue])
    store.audit.record(conn, "resume", target=queue, actor=actor, now=now)


def set_queue_limit(
    bind: Bind,
    queue: str,
    limit: int | None,
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> None:
    """At most ``limit`` steps of ``queue`` run at once across every runner (None: no
    global limit, only each runner's own concurrency). Takes effect at the next claim
    after the caller commits; steps already running finish. Recorded in the audit table.
    """
    targets.check_now(now)
    check_actor(actor)
    if limit is not None and not serialization.is_count(limit):
        raise ValidationError(
            f"a queue's concurrency limit is an int from 1 to {serialization.MAX_INT32} or "
            f"None, got {limit!r}"
        )
    conn = connection(bind)
    store.queues.set_limit(conn, _check_queue(queue), limit, now)
    store.notify.notify(conn, [queue])
    store.audit.record(
        conn, "queue_limit", target=queue, actor=actor, details={"limit": limit}, now=now
    )
