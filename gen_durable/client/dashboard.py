"""What the web dashboard reads: a filtered instance list in keyset pages, the overview of
every queue, and one instance with its timeline, signals, children and ``explain()``.

Every function reads in the caller's Session or Connection; none writes.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import attrs

from gen_durable import store
from gen_durable.client import fleet
from gen_durable.client.explain import Explanation, explain
from gen_durable.client.operations import get
from gen_durable.client.targets import Bind, check_now, check_target, connection
from gen_durable.domain import registry, serialization
from gen_durable.errors import NotFound, ValidationError
from gen_durable.store import dashboard as sql
from gen_durable.store.dashboard import TreeNode
from gen_durable.store.history import HistoryRecord
from gen_durable.store.queries import ListedInstance
from gen_durable.types import InstanceSnapshot, Status

__all__ = [
    "BulkProgress",
    "InstanceDetail",
    "InstanceFilter",
    "InstancePage",
    "Overview",
    "QueueSummary",
    "bulk_progress",
    "classes",
    "history_mode",
    "instance_detail",
    "instance_page",
    "overview",
]

MAX_PAGE = 500
"""The largest page :func:`instance_page` serves."""


def _text(value: object, what: str) -> str | None:
    if value is None or value == "":
        return None
    return serialization.check_text(value, what)


def _class(value: object) -> str | None:
    return _text(value, "class")


def _queue(value: object) -> str | None:
    return _text(value, "queue")


def _step(value: object) -> str | None:
    return _text(value, "step")


def _key(value: object) -> str | None:
    return _text(value, "correlation key")


def _owner(value: object) -> str | None:
    return _text(value, "worker")


@attrs.frozen
class InstanceFilter:
    """Which instances a listing shows: every given field must match (None: any).

    ``created_after`` is inclusive, ``created_before`` exclusive. Invalid values raise
    :class:`~gen_durable.errors.ValidationError` when the filter is built.
    """

    fsm: str | None = attrs.field(default=None, converter=_class)
    status: str | None = None
    queue: str | None = attrs.field(default=None, converter=_queue)
    step: str | None = attrs.field(default=None, converter=_step)
    correlation_key: str | None = attrs.field(default=None, converter=_key)
    lease_owner: str | None = attrs.field(default=None, converter=_owner)
    """The runner (its node id) holding the instance's lease."""
    created_after: datetime | None = None
    created_before: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.status not in (None, *(s.value for s in Status)):
            known = ", ".join(s.value for s in Status)
            raise ValidationError(f"unknown status {self.status!r:.40}; one of: {known}")
        serialization.check_moment(self.created_after, "created_after")
        serialization.check_moment(self.created_before, "created_before")

    def as_dict(self) -> dict[str, Any]:
        """The set fields, by name."""
        return {k: v for k, v in attrs.asdict(self).items() if v is not None}


@attrs.frozen
class InstancePage:
    """One page of a listing, newest first, and the cursors of the pages around it."""

    rows: tuple[ListedInstance, ...]
    newer: int | None
    """Pass as ``after`` for the page before (None: this is the first page)."""
    older: int | None
    """Pass as ``before`` for the next page (None: this is the last page)."""


def _check_cursor(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an instance id, got {value!r:.40}")
    return check_target(value)  # type: ignore[return-value]


def instance_page(
    bind: Bind,
    where: InstanceFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = 50,
) -> InstancePage:
    """The instances matching ``where``, newest first, ``limit`` at a time.

    ``before``: the page after an id (older rows); ``after``: the page before it (newer
    rows). Keyset pagination: a page costs the same however deep it is.
    """
    if before is not None and after is not None:
        raise ValidationError("pass before or after, not both")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be an int from 1 to {MAX_PAGE}, got {limit!r:.40}")
    before = _check_cursor(before, "before")
    after = _check_cursor(after, "after")
    conn = connection(bind)
    found = sql.instance_page(
        conn, where.as_dict(), before_id=before, after_id=after, limit=limit + 1
    )
    more = len(found) > limit
    found = found[:limit]
    if after is not None:  # read oldest first from the cursor: put newest first
        rows = tuple(reversed(found))
        newer = rows[0].id if more and rows else None
        older = rows[-1].id if rows else None
    else:
        rows = tuple(found)
        newer = rows[0].id if before is not None and rows else None
        older = rows[-1].id if more else None
    return InstancePage(rows=rows, newer=newer, older=older)


@attrs.frozen
class QueueSummary:
    """One queue as the overview shows it."""

    name: str
    counts: dict[str, int]
    """Unfinished instances by status, and those finished (done, failed, cancelled) over
    the overview's window (statuses with none are left out)."""
    paused: bool
    limit: int | None
    oldest_waiting_age: float | None
    """Seconds since the longest-waiting runnable instance fell due (None: none waits)."""
    served: bool
    """A live runner serves it."""
    finished: tuple[tuple[int, int], ...]
    """Per minute of the window, oldest first: (done, failed)."""

    @property
    def done(self) -> int:
        """Instances finished done over the window."""
        return sum(d for d, _ in self.finished)

    @property
    def failed(self) -> int:
        """Instances finished failed over the window."""
        return sum(f for _, f in self.finished)

    @property
    def failure_rate(self) -> float | None:
        """Failed / (done + failed) over the window (None: nothing finished)."""
        total = self.done + self.failed
        return None if total == 0 else self.failed / total


@attrs.frozen
class Overview:
    """Every queue with unfinished instances, instances finished in the window, stored
    settings or a live runner, at the database's time."""

    checked_at: datetime
    minutes: int
    queues: tuple[QueueSummary, ...]


def overview(bind: Bind, *, minutes: int = 60, now: datetime | None = None) -> Overview:
    """Per queue: unfinished instances by status, instances finished per minute over the
    last ``minutes`` (done, failed; cancelled counted), paused or not, its global limit,
    the oldest waiting instance's age and whether a live runner serves it.

    It reads the unfinished rows and the window's finished ones, never the whole table.
    """
    check_now(now)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= 1440:
        raise ValidationError(f"minutes must be an int from 1 to 1440, got {minutes!r:.40}")
    conn = connection(bind)
    at = store.explain.database_now(conn, now)
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in sql.unfinished_counts(conn):
        counts[row.queue][row.status] = row.n
    start = at.replace(second=0, microsecond=0)
    series: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in range(minutes)])
    for m in sql.finished_per_minute(conn, minutes, now):
        by_status = counts[m.queue]
        by_status[m.status] = by_status.get(m.status, 0) + m.n
        slot = minutes - 1 - int((start - m.minute).total_seconds() // 60)
        if 0 <= slot < minutes and m.status in ("done", "failed"):
            series[m.queue][slot][m.status == "failed"] += m.n
    settings = {q.name: q for q in store.queues.settings(conn)}
    waiting = store.fleet.oldest_waiting(conn, now)
    served = {q for w in fleet.workers(conn, now=now) if not w.stale for q in w.queues}
    queues = tuple(
        QueueSummary(
            name=name,
            counts=counts.get(name, {}),
            paused=settings[name].paused if name in settings else False,
            limit=settings[name].concurrency_limit if name in settings else None,
            oldest_waiting_age=waiting.get(name),
            served=name in served,
            finished=tuple((d, f) for d, f in series[name]),
        )
        for name in sorted({*counts, *settings, *served})
    )
    return Overview(checked_at=at, minutes=minutes, queues=queues)


def history_mode(fsm: str) -> str | None:
    """The history setting of a class known in this process ("all", "errors", "none"), or
    None when the class is not imported here or leaves it to the Runner."""
    cls = registry.lookup(fsm)
    mode = getattr(cls, "history", None)
    return mode if isinstance(mode, str) else None


@attrs.frozen
class InstanceDetail:
    """Everything the instance page shows."""

    snapshot: InstanceSnapshot
    explanation: Explanation
    history: tuple[HistoryRecord, ...]
    """Its last recorded transitions, oldest first (empty: none recorded)."""
    history_mode: str | None
    children: tuple[TreeNode, ...]
    """Its descendants, shallowest first (``depth`` 0: its own children)."""
    children_cut: bool
    """True when the tree was cut at its row or depth bound."""
    parent: ListedInstance | None


def instance_detail(
    bind: Bind,
    target: int | str,
    *,
    history_limit: int = 200,
    tree_depth: int = 5,
    tree_limit: int = 500,
) -> InstanceDetail:
    """One instance (by id or correlation key) with its timeline, signals, children tree,
    parent and the answer of :func:`~gen_durable.explain`."""
    snapshot = get(bind, target)
    conn = connection(bind)
    why = explain(conn, snapshot.id)
    history = store.history.of_instance(conn, snapshot.id, history_limit)
    tree = sql.descendants(conn, snapshot.id, tree_depth, tree_limit + 1)
    parent = None
    if snapshot.parent_id is not None:
        page = sql.instance_page(conn, {}, before_id=snapshot.parent_id + 1, after_id=None, limit=1)
        parent = page[0] if page and page[0].id == snapshot.parent_id else None
    cut = len(tree) > tree_limit or any(node.depth >= tree_depth for node in tree)
    return InstanceDetail(
        snapshot=snapshot,
        explanation=why,
        history=tuple(history),
        history_mode=history_mode(snapshot.fsm),
        children=tuple(tree[:tree_limit]),
        children_cut=cut,
        parent=parent,
    )


def classes(bind: Bind) -> list[str]:
    """Every class name known here or found in the table, sorted (reads the whole table:
    for the class index, not for a page that refreshes)."""
    return sorted({*registry.registered(), *sql.classes(connection(bind))})


@attrs.frozen
class BulkProgress:
    """Where a bulk action (:mod:`gen_durable.client.bulk`) got to, from its audit row."""

    id: int
    action: str
    """``"cancel"`` or ``"retry"``."""
    actor: str | None
    at: datetime
    where: dict[str, Any]
    """Its filter, as stored."""
    expected: int
    bound: int
    done: int
    skipped: int
    last_id: int
    finished: bool


def bulk_progress(bind: Bind, audit_id: int) -> BulkProgress:
    """The progress of the bulk action whose audit row is ``audit_id`` (NotFound if none)."""
    audit_id = _check_cursor(audit_id, "audit_id") or 0
    rows = store.audit.listing(connection(bind), before_id=audit_id + 1, limit=1)
    row = rows[0] if rows else None
    if row is None or row.id != audit_id or not row.action.startswith("bulk_"):
        raise NotFound(f"no bulk action has audit id {audit_id}")
    d = row.details or {}
    return BulkProgress(
        id=row.id,
        action=row.action.removeprefix("bulk_"),
        actor=row.actor,
        at=row.at,
        where=dict(d.get("filter") or {}),
        expected=int(d.get("expected", 0)),
        bound=int(d.get("bound", 0)),
        done=int(d.get("done", 0)),
        skipped=int(d.get("skipped", 0)),
        last_id=int(d.get("last_id", 0)),
        finished=bool(d.get("finished")),
    )
