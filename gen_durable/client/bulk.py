"""Bulk cancel and retry: preview what a filter matches, then act on it in keyset batches,
one transaction each, resumable, under one audit row.

The flow: :func:`bulk_preview` counts the matching instances and fixes ``bound``, the
highest matching id, so that rows inserted later are never touched; :func:`bulk_start`
records the action (its filter, the preview's count and bound) in the audit table;
:func:`bulk_step` acts on the next batch and the caller commits it. Each row is cancelled
or retried exactly as :func:`gen_durable.cancel` or :func:`gen_durable.retry` would (its
wake-ups, children and notifications, and its own audit row, so that the audit of an
instance shows it) — a batch of retries in a few statements for the whole batch, cancels
one by one; the action's row keeps a running count and where it got to, so an
interrupted action resumes after its last committed batch.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from gen_durable import store
from gen_durable.client.operations import cancel, retry_each
from gen_durable.client.targets import Bind, check_actor, check_now, connection
from gen_durable.domain import serialization
from gen_durable.errors import NotFound, ValidationError
from gen_durable.store.bulk import Where
from gen_durable.types import FINISHED, Status

__all__ = [
    "ACTIONS",
    "BulkAction",
    "BulkBatch",
    "BulkFilter",
    "BulkPreview",
    "bulk_preview",
    "bulk_start",
    "bulk_step",
    "eligible",
]

BulkAction = Literal["cancel", "retry"]
ACTIONS: dict[str, tuple[str, ...]] = {
    "cancel": tuple(sorted(s.value for s in Status if s not in FINISHED)),
    "retry": ("cancelled", "failed"),
}
"""The statuses each bulk action can act on (those its single form accepts)."""
MAX_BATCH = 10_000
MAX_SAMPLE = 1_000


def _text(what: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: object, _attribute: object, value: object) -> None:
        if value is not None:
            serialization.check_text(value, what)

    return check


def _status(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and value not in {s.value for s in Status}:
        raise ValidationError(
            f"status must be one of {', '.join(s.value for s in Status)}, got {value!r:.80}"
        )


def _seconds(_instance: object, _attribute: object, value: float | None) -> None:
    if value is not None and not serialization.is_seconds(value):
        raise ValidationError(f"older_than must be seconds >= 0, got {value!r:.80}")


@attrs.frozen(kw_only=True)
class BulkFilter:
    """Which instances a bulk action matches: every given field (None: any)."""

    class_name: str | None = attrs.field(default=None, validator=_text("class_name"))
    """The registry name of the FSM or Job class."""
    status: str | None = attrs.field(default=None, validator=_status)
    """One status (else every status the action can act on)."""
    step: str | None = attrs.field(default=None, validator=_text("step"))
    queue: str | None = attrs.field(default=None, validator=_text("queue"))
    older_than: float | None = attrs.field(default=None, validator=_seconds)
    """Seconds since the instance last changed (its ``updated_at``), at least."""
    correlation_key_prefix: str | None = attrs.field(
        default=None, validator=_text("correlation_key_prefix")
    )
    """The start of the correlation key (matched literally: ``%`` and ``_`` are text)."""

    def as_json(self) -> dict[str, Any]:
        """The given fields, as stored in the action's audit row."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen
class BulkPreview:
    """What a bulk action would act on now."""

    count: int
    """How many instances match (with an id up to ``bound``)."""
    bound: int
    """The highest matching id (0: none): the action never touches an id above it."""
    sample: list[int]
    """The lowest matching ids (those the first batch takes)."""


@attrs.frozen
class BulkBatch:
    """What one :func:`bulk_step` did."""

    ids: list[int]
    """The instances this batch cancelled or retried."""
    last_id: int
    """The highest id this batch looked at: the next batch starts after it."""
    done: bool
    """No matching instance is left under the bound."""
    total: int
    """Instances the whole action acted on so far (the audit row's running count)."""


def eligible(action: object, where: object) -> tuple[str, ...]:
    """The statuses ``action`` acts on under ``where`` (raises ValidationError for a bad
    action or filter, or a status the action cannot act on)."""
    if action not in ACTIONS:
        raise ValidationError(f"a bulk action is 'cancel' or 'retry', got {action!r:.80}")
    if not isinstance(where, BulkFilter):
        raise ValidationError(f"expected a BulkFilter, got {type(where).__name__}")
    statuses = ACTIONS[str(action)]
    if where.status is None:
        return statuses
    if where.status not in statuses:
        raise ValidationError(
            f"{action} acts on {', '.join(statuses)} instances, so status "
            f"{where.status!r} matches none"
        )
    return (where.status,)


def _where(statuses: tuple[str, ...], where: BulkFilter, updated_before: datetime | None) -> Where:
    return Where(
        statuses,
        where.class_name,
        where.step,
        where.queue,
        updated_before,
        where.correlation_key_prefix,
    )


def _cutoff(bind: Bind, where: BulkFilter, now: datetime | None) -> datetime | None:
    if where.older_than is None:
        return None
    at = store.explain.database_now(connection(bind), now)
    return at - timedelta(seconds=where.older_than)


def bulk_preview(
    bind: Bind,
    action: BulkAction,
    where: BulkFilter,
    *,
    sample: int = 10,
    now: datetime | None = None,
) -> BulkPreview:
    """How many instances ``action`` ("cancel" or "retry") would act on, the bound (the
    highest matching id now) and a sample of their ids. Read-only."""
    check_now(now)
    statuses = eligible(action, where)
    if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample <= MAX_SAMPLE:
        raise ValidationError(f"sample must be an int from 0 to {MAX_SAMPLE}, got {sample!r}")
    found = _where(statuses, where, _cutoff(bind, where, now))
    count, bound, ids = store.bulk.preview(connection(bind), found, sample)
    return BulkPreview(count, bound, ids)


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{what} must be an int >= 0, got {value!r:.80}")
    if value > serialization.MAX_ID:
        raise ValidationError(f"{what} must fit a 64-bit integer, got {value}")
    return value


def bulk_start(
    bind: Bind,
    action: BulkAction,
    where: BulkFilter,
    *,
    bound: int,
    expected: int,
    actor: str | None,
    reason: str = "cancelled by operator",
    now: datetime | None = None,
) -> int:
    """Record a bulk action in the audit table and return the row's id (the action's id).

    ``bound`` and ``expected`` come from :func:`bulk_preview`; ``reason`` is stored as
    each cancelled instance's error. An ``older_than`` is made absolute here, so every
    batch matches the same rows. Nothing is acted on until :func:`bulk_step`.
    """
    check_now(now)
    eligible(action, where)
    check_actor(actor)
    if action == "cancel":
        serialization.check_text(reason, "reason")
    cutoff = _cutoff(bind, where, now)
    details = {
        "filter": where.as_json(),
        "updated_before": None if cutoff is None else cutoff.isoformat(),
        "expected": _count(expected, "expected"),
        "bound": _count(bound, "bound"),
        "reason": reason if action == "cancel" else None,
        "done": 0,
        "skipped": 0,
        "last_id": 0,
        "finished": False,
    }
    conn = connection(bind)
    return store.audit.record(conn, f"bulk_{action}", actor=actor, details=details, now=now)


def bulk_step(
    bind: Bind,
    audit_id: int,
    *,
    after: int | None = None,
    batch: int = 500,
    now: datetime | None = None,
) -> BulkBatch:
    """Act on the next ``batch`` matching instances of the bulk action ``audit_id``: those
    with an id above ``after`` (None: where the action's last committed batch ended) and
    at most its bound, still matching its filter (an instance that changed meanwhile is
    left alone). The caller commits: one transaction per batch. Concurrent steps of one
    action queue up on its audit row.
    """
    check_now(now)
    _count(audit_id, "audit_id")
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise ValidationError(f"batch must be an int from 1 to {MAX_BATCH}, got {batch!r}")
    conn = connection(bind)
    row = store.bulk.lock_audit_row(conn, audit_id)
    if row is None or row.action not in ("bulk_cancel", "bulk_retry"):
        raise NotFound(f"no bulk action has audit id {audit_id}")
    details = row.details
    start = details.get("last_id", 0) if after is None else _count(after, "after")
    action = row.action.removeprefix("bulk_")
    where = BulkFilter(**details["filter"])
    cutoff = details.get("updated_before")
    found = _where(eligible(action, where), where, cutoff and datetime.fromisoformat(cutoff))
    ids = store.bulk.batch(conn, found, start, details["bound"], batch)
    if action == "retry":
        acted = retry_each(conn, ids, actor=row.actor, now=now)
    else:
        reason = details.get("reason") or "cancelled"
        acted = [i for i in ids if _cancel(conn, i, reason, row.actor, now)]
    last = ids[-1] if ids else start
    finished = len(ids) < batch
    store.audit.add_count(conn, audit_id, "done", len(acted))
    store.audit.add_count(conn, audit_id, "skipped", len(ids) - len(acted))
    store.bulk.save_progress(conn, audit_id, max(last, details.get("last_id", 0)), finished)
    return BulkBatch(acted, last, finished, int(details.get("done", 0)) + len(acted))


def _cancel(bind: Bind, instance_id: int, reason: str, actor: str | None, now: Any) -> bool:
    """One row, as the single action does it; False when it no longer applies."""
    try:
        return cancel(bind, instance_id, reason, actor=actor, now=now)
    except NotFound:  # pruned meanwhile
        return False
