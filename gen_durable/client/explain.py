"""``explain()``: why an instance is not running right now, in a sentence and in fields."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs
from sqlalchemy import Connection

from gen_durable import store
from gen_durable.client import upgrades
from gen_durable.client.explain_edges import lapse, rate_hold
from gen_durable.client.explain_text import FINISHED as _FINISHED
from gen_durable.client.explain_text import attempt as _attempt
from gen_durable.client.explain_text import awaited as _awaited
from gen_durable.client.explain_text import error_text as _error
from gen_durable.client.explain_text import ids_text as _ids
from gen_durable.client.explain_text import quoted as _quoted
from gen_durable.client.explain_text import resumes as _resumes
from gen_durable.client.explain_text import when as _when
from gen_durable.client.targets import Bind, check_now, check_target, connection, not_found
from gen_durable.domain import versioning
from gen_durable.errors import NotFound, ValidationError
from gen_durable.store import explain as explain_sql
from gen_durable.store.explain import LiveNode
from gen_durable.store.instances import InstanceRecord
from gen_durable.types import JSON, Status

__all__ = ["Explanation", "Reason", "explain"]

Reason = Literal[
    "finished",
    "running",
    "lease_expired",
    "runnable",
    "no_runner",
    "unknown_class",
    "scheduled",
    "backing_off",
    "awaiting_signals",
    "awaiting_children",
    "blocked",
    "queue_paused",
    "rate_limited",
    "upgrade_failed",
    "unknown_version",
    "unknown_step",
]
AHEAD_CAP = 10_000
"""Runnable instances ahead in the queue are counted up to this many."""


@attrs.frozen
class Explanation:
    """Why an instance is (not) running, as :func:`explain` found it.

    ``summary`` says it in sentences; ``reason`` is the main cause as a code, and the
    other fields hold the facts behind it (empty or None where they do not apply).
    """

    instance_id: int
    fsm: str
    status: Status
    step: str
    queue: str
    reason: Reason
    summary: str
    checked_at: datetime
    """The database's time when the instance was looked at."""
    correlation_key: str | None = None
    attempt: int = 0
    max_attempts: int = 0
    run_at: datetime | None = None
    """When it falls due: a delay, a Sleep, a backoff, or an await's timeout."""
    error: JSON = None
    """The last error (a backoff's cause, or why it failed)."""
    awaiting: tuple[str, ...] = ()
    """The signal names an await waits for."""
    await_all: bool = False
    pending_signals: tuple[str, ...] = ()
    """Names of its pending (unconsumed) signals, whatever it awaits, by first arrival."""
    waiting_for_children: tuple[int, ...] = ()
    """Ids of the unfinished children of its latest Spawn (the first 100)."""
    pending_children: int = 0
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    key_holders: tuple[int, ...] = ()
    """Ids of the running instances that hold its concurrency key (the first 100)."""
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    runner_last_heartbeat: datetime | None = None
    """The last heartbeat of the runner that holds its lease (None: not registered)."""
    runner_heartbeat_interval: float | None = None
    """That runner's own seconds between heartbeats (None: not recorded)."""
    rate_bucket: str | None = None
    """The key of its rate-limit bucket (``class:step or *:partition``)."""
    rate_partition: str | None = None
    rate_tokens: float | None = None
    """The tokens its bucket holds now, refilled (None: the limit is not recorded)."""
    rate_debt_until: datetime | None = None
    """The bucket is in debt until then (a ``RateLimited`` step emptied it)."""
    rate_can_pay_at: datetime | None = None
    """When its bucket can pay for it, if nothing ahead of it takes the tokens first."""
    queued_ahead: int | None = None
    """How many runnable instances of its queue are picked before it."""
    runners: tuple[str, ...] = ()
    """Live runners that serve its queue."""
    class_known: bool | None = None
    """Whether one of those runners knows its class (None: no runner serves the queue)."""
    notes: tuple[str, ...] = ()
    """Further problems that will matter once the main cause is gone."""
    finished_at: datetime | None = None
    result: JSON = None

    def __str__(self) -> str:
        return self.summary


def explain(
    bind: Bind, target: int | str, *, heartbeat_timeout: float = 60.0, now: datetime | None = None
) -> Explanation:
    """Why the instance ``target`` (an id, or a correlation key) is not running.

    Waiting for which signals (and which are already pending), backing off until when,
    blocked on its concurrency key by which running instances, waiting for how many
    children, no live runner serving its queue or knowing its class, or finished (and
    how). A runner counts as live when it sent a heartbeat in the last
    ``heartbeat_timeout`` seconds. Read-only: runs in the caller's transaction.
    """
    check_now(now)
    target, timeout = check_target(target), heartbeat_timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValidationError(f"heartbeat_timeout must be seconds > 0, got {timeout!r}")
    conn = connection(bind)
    found = store.instances.resolve_read(conn, target)
    row = store.instances.fetch(conn, found) if found is not None else None
    if row is None:
        raise NotFound(not_found(target, live=False))
    at, status = explain_sql.database_now(conn, now), Status(row.status)
    if row.finished_at is not None:
        said = _FINISHED.get(status, _FINISHED[Status.FAILED])(row, _when(row.finished_at, at))
        facts = {"finished_at": row.finished_at, "result": row.result}
        notes = _resumes(row, at) if status is Status.CANCELLED else ()
        verdict, shared = _Verdict("finished", f"is finished: {said}", facts, notes), {}
    else:
        seen = _Seen.read(conn, row, at, timeout, now)
        verdict, shared = _UNFINISHED.get(status, _unknown)(seen), seen.shared
    key = f", key {row.correlation_key!r}" if row.correlation_key else ""
    return Explanation(
        **{name: getattr(row, name) for name in _COPIED.split()},
        **shared,
        **verdict.facts,
        instance_id=row.id,
        status=status,
        checked_at=at,
        reason=verdict.reason,
        summary=" ".join([f"Instance {row.id} ({row.fsm}{key}) {verdict.text}", *verdict.notes]),
        notes=verdict.notes,
    )


_COPIED = (
    "fsm step queue correlation_key attempt max_attempts error concurrency_key concurrency_limit"
)
"""The fields of :class:`Explanation` that copy the instance's column of that name."""
_Problem = tuple[Reason, str]
_Nodes = Sequence[LiveNode]


@attrs.frozen
class _Verdict:
    """A status's answer: the main cause, the sentence after the label, facts and notes."""

    reason: Reason
    text: str
    facts: dict[str, Any] = attrs.field(factory=dict)
    notes: tuple[str, ...] = ()


@attrs.frozen
class _Seen:
    """An unfinished instance, with the live runners and pending signals it reports on."""

    conn: Connection
    row: InstanceRecord
    at: datetime
    live: bool
    heartbeat_timeout: float
    problem: _Problem | None
    """Why no live runner would run it now: the cause once it is due."""
    later: tuple[str, ...]
    """The same problem as a note, for an instance that is not due yet."""
    shared: dict[str, Any]
    """The facts of every unfinished status: runners, class_known, pending_signals."""

    @classmethod
    def read(
        cls,
        conn: Connection,
        row: InstanceRecord,
        at: datetime,
        timeout: float,
        now: datetime | None,
    ) -> _Seen:
        """Look up the live runners and the instance's pending signals."""
        nodes = explain_sql.live_nodes(conn, timedelta(seconds=timeout), now)
        serving = [n for n in nodes if row.queue in (n.queues or {})]
        knowing = [n for n in serving if row.fsm in (n.fsms or ())]
        problem = _runner_problem(row, nodes, serving, knowing, timeout)
        if problem is None:
            problem = upgrades.runner_problem(row, knowing)
        shared = {
            "runners": tuple(n.id for n in serving),
            "class_known": bool(knowing) if serving else None,
            "pending_signals": tuple(p.name for p in explain_sql.pending_signals(conn, row.id)),
        }
        later = () if problem is None else (problem[1][:1].upper() + problem[1][1:],)
        return cls(conn, row, at, bool(nodes), timeout, problem, later, shared)


def _running(seen: _Seen) -> _Verdict:
    """Running under its lease, or stuck since the lease expired."""
    row, at = seen.row, seen.at
    facts = {"lease_owner": row.lease_owner, "lease_expires_at": row.lease_expires_at}
    expires = _when(row.lease_expires_at, at)
    if row.lease_expires_at is None or row.lease_expires_at > at:
        text = f"is running step {row.step!r} ({_attempt(row)}) on runner {row.lease_owner}, "
        runner, seen_facts = lapse(seen.conn, row, at)
        text = f"{text}its lease held until {expires}. {runner}"
        return _Verdict("running", text, {**facts, **seen_facts})
    then = (
        "fails it: that was its last attempt."
        if row.attempt >= row.max_attempts
        else "makes it runnable again for the next attempt."
    )
    text = (
        f"is stuck at step {row.step!r}: the lease of runner {row.lease_owner} expired "
        f"{expires} (the runner crashed or stalled). A runner's reaper {then}"
    )
    no_reaper = _no_runner_at_all(seen.heartbeat_timeout, "so no reaper runs either")
    return _Verdict("lease_expired", text, facts, () if seen.live else (no_reaper,))


def _available(seen: _Seen) -> _Verdict:
    """Runnable: unless its queue is paused or no runner takes it, behind how many."""
    row = seen.row
    ahead = explain_sql.ahead_in_queue(
        seen.conn, row.queue, row.priority, row.run_at, row.id, AHEAD_CAP
    )
    facts = {"queued_ahead": ahead}
    paused = {q.name for q in store.queues.settings(seen.conn) if q.paused}
    runnable = f"is runnable at step {row.step!r}"
    if row.queue in paused:
        text = (
            f"{runnable}, but its queue {row.queue!r} is paused on every runner (resume it "
            "with gen-durable resume or resume_queue)."
        )
        return _Verdict("queue_paused", text, facts)
    if seen.problem is not None:
        return _Verdict(seen.problem[0], f"{runnable}, but {seen.problem[1]}", facts)
    count = f"at least {ahead}" if ahead >= AHEAD_CAP else str(ahead)
    queued = (
        f"it is next in queue {row.queue!r}"
        if ahead == 0
        else f"{count} runnable instance(s) are ahead of it in queue {row.queue!r}"
    )
    served = ", ".join(seen.shared["runners"])
    text = f"{runnable} and waits for a free worker: {queued} (served by {served})."
    return _Verdict("runnable", text, facts)


def _scheduled(seen: _Seen) -> _Verdict:
    """Delayed, or backing off after a failed attempt; once due, runners are the cause."""
    row, due = seen.row, _when(seen.row.run_at, seen.at)
    if row.run_at is None and versioning.is_upgrade_error(row.error):
        return _Verdict("upgrade_failed", upgrades.parked(row))
    reason: Reason = "scheduled" if row.error is None else "backing_off"
    text = (
        f"is scheduled to run step {row.step!r} {due}."
        if row.error is None
        else f"is backing off: {_attempt(row)} of step {row.step!r} failed with "
        f"{_error(row.error)}; the next attempt is due {due}."
    )
    held = rate_hold(seen.conn, row, seen.at)
    facts = {"run_at": row.run_at, **(held.facts if held is not None else {})}
    if held is not None and held.holds:
        text = f"is held by a rate limit at step {row.step!r}. {held.text}"
        return _Verdict("rate_limited", text, facts, seen.later)
    if held is not None:
        text += f" {held.text}"
    if row.run_at is None or row.run_at > seen.at:
        return _Verdict(reason, text, facts, seen.later)
    text += " It is due: a runner's scheduler makes it runnable within its poll interval."
    if seen.problem is not None:
        reason, problem = seen.problem
        text += f" But {problem}"
    return _Verdict(reason, text, facts)


def _awaiting(seen: _Seen) -> _Verdict:
    """Parked on the children of its latest Spawn (it has a join policy), else on signals."""
    row = seen.row
    if row.join_policy is None:
        return _awaiting_signals(seen)
    children = explain_sql.unfinished_children(seen.conn, row.id)
    facts = {"waiting_for_children": tuple(children), "pending_children": row.pending_children}
    text = (
        f"is waiting for {row.pending_children} child instance(s) of its latest Spawn "
        f"({_ids(children, row.pending_children)}; on_failure={row.join_policy!r}), then "
        f"resumes at step {row.step!r}."
    )
    return _Verdict("awaiting_children", text, facts, seen.later)


def _awaiting_signals(seen: _Seen) -> _Verdict:
    """Which awaited signals are pending and which missing, what else is, when it times out."""
    row, pending = seen.row, seen.shared["pending_signals"]
    names = tuple(row.await_names or ())
    text = f"is waiting for signal {_awaited(row)}, then resumes at step {row.step!r}."
    have, missing = [n for n in names if n in pending], [n for n in names if n not in pending]
    if have:
        text += f" Already pending: {_quoted(have)}; still missing: {_quoted(missing)}."
    else:
        text += " None of them is pending."
    if others := [n for n in pending if n not in names]:
        text += f" Other pending signals (not awaited): {_quoted(others)}."
    if row.run_at is not None:
        resume = row.timeout_step or row.step
        text += f" It times out {_when(row.run_at, seen.at)} and then resumes at step {resume!r}."
    facts = {"awaiting": names, "await_all": row.await_all, "run_at": row.run_at}
    return _Verdict("awaiting_signals", text, facts, seen.later)


def _blocked(seen: _Seen) -> _Verdict:
    """Its concurrency key is at its limit: held by which running instances."""
    row = seen.row
    key = row.concurrency_key
    # A blocked instance has a key; without one, none holds it (as = NULL matched no row).
    holders = explain_sql.key_holders(seen.conn, key) if key is not None else []
    text = (
        f"is blocked: its concurrency key {key!r} allows {row.concurrency_limit or 1} running "
        f"at once, and {_ids(holders, len(holders))} hold(s) it. It becomes runnable when one "
        "of them stops running."
        if holders
        else f"is blocked on its concurrency key {key!r}, yet no instance with that key is "
        "running: a runner's reaper releases it shortly."
    )
    return _Verdict("blocked", text, {"key_holders": tuple(holders)}, seen.later)


def _unknown(seen: _Seen) -> _Verdict:  # pragma: no cover - a finished status has finished_at
    return _Verdict("scheduled", f"has status {seen.row.status!r}.")


_UNFINISHED: dict[Status, Callable[[_Seen], _Verdict]] = {
    Status.AVAILABLE: _available,
    Status.SCHEDULED: _scheduled,
    Status.AWAITING: _awaiting,
    Status.RUNNING: _running,
    Status.BLOCKED: _blocked,
}


def _runner_problem(
    row: InstanceRecord, nodes: _Nodes, serving: _Nodes, knowing: _Nodes, heartbeat_timeout: float
) -> _Problem | None:
    """Why no live runner would run the instance now, or None if one would."""
    if not nodes:
        return "no_runner", _no_runner_at_all(heartbeat_timeout)
    if not serving:
        queues = sorted({q for n in nodes for q in (n.queues or {})})
        return "no_runner", (
            f"no live runner serves queue {row.queue!r} (the live ones serve "
            f"{_quoted(queues) or 'no queue'}): start one with that queue."
        )
    if not knowing:
        return "unknown_class", (
            f"none of the runners serving queue {row.queue!r} "
            f"({', '.join(n.id for n in serving)}) knows class {row.fsm!r}: import the module "
            "that defines it in the worker (gen-durable run --import MODULE) and restart it."
        )
    return None


def _no_runner_at_all(heartbeat_timeout: float, tail: str = "") -> str:
    extra = f", {tail}" if tail else ""
    return f"no runner is live (none sent a heartbeat in the last {heartbeat_timeout:g}s){extra}."
