"""``explain()``: why an instance is not running right now, in a sentence and in fields."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import attrs

from gen_durable import store
from gen_durable.errors import NotFound, ValidationError
from gen_durable.store import explain as explain_sql
from gen_durable.targets import Bind, check_target, connection, not_found
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
    bind: Bind,
    target: int | str,
    *,
    heartbeat_timeout: float = 60.0,
    now: datetime | None = None,
) -> Explanation:
    """Why the instance ``target`` (an id, or a correlation key) is not running.

    Waiting for which signals (and which are already pending), backing off until when,
    blocked on its concurrency key by which running instances, waiting for how many
    children, no live runner serving its queue or knowing its class, or finished (and
    how). A runner counts as live when it sent a heartbeat in the last
    ``heartbeat_timeout`` seconds. Read-only: runs in the caller's transaction.
    """
    target = check_target(target)
    if (
        isinstance(heartbeat_timeout, bool)
        or not isinstance(heartbeat_timeout, int | float)
        or not heartbeat_timeout > 0
    ):
        raise ValidationError(f"heartbeat_timeout must be seconds > 0, got {heartbeat_timeout!r}")
    conn = connection(bind)
    found = store.instances.resolve_read(conn, target)
    row = store.instances.fetch(conn, found) if found is not None else None
    if row is None:
        raise NotFound(not_found(target, live=False))
    at = explain_sql.database_now(conn, now)
    base: dict[str, Any] = {
        "instance_id": row.id,
        "fsm": row.fsm,
        "status": Status(row.status),
        "step": row.step,
        "queue": row.queue,
        "checked_at": at,
        "correlation_key": row.correlation_key,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "error": row.error,
        "concurrency_key": row.concurrency_key,
        "concurrency_limit": row.concurrency_limit,
    }
    label = f"Instance {row.id} ({row.fsm}{_key(row.correlation_key)})"
    if row.finished_at is not None:
        return Explanation(
            **base,
            reason="finished",
            summary=f"{label} {_finished(row, at)}",
            finished_at=row.finished_at,
            result=row.result,
        )
    nodes = explain_sql.live_nodes(conn, timedelta(seconds=heartbeat_timeout), now)
    serving = [n for n in nodes if row.queue in (n.queues or {})]
    knowing = [n for n in serving if row.fsm in (n.fsms or ())]
    base["runners"] = tuple(n.id for n in serving)
    base["class_known"] = bool(knowing) if serving else None
    runner_problem = _runner_problem(row, nodes, serving, knowing, heartbeat_timeout)
    pending = explain_sql.pending_signals(conn, row.id)
    base["pending_signals"] = tuple(p.name for p in pending)
    facts: dict[str, Any] = {}
    notes: list[str] = []
    reason: Reason
    status = row.status
    if status == "running":
        facts = {"lease_owner": row.lease_owner, "lease_expires_at": row.lease_expires_at}
        expired = row.lease_expires_at is not None and row.lease_expires_at <= at
        if expired:
            reason = "lease_expired"
            last = row.attempt >= row.max_attempts
            text = (
                f"is stuck at step {row.step!r}: the lease of runner {row.lease_owner} expired "
                f"{_when(row.lease_expires_at, at)} (the runner crashed or stalled). A "
                "runner's reaper "
                + (
                    "fails it: that was its last attempt."
                    if last
                    else "makes it runnable again for the next attempt."
                )
            )
            if not nodes:
                notes.append(_no_runner_at_all(heartbeat_timeout, "so no reaper runs either"))
        else:
            reason = "running"
            text = (
                f"is running step {row.step!r} (attempt {row.attempt} of {row.max_attempts}) "
                f"on runner {row.lease_owner}, its lease held until "
                f"{_when(row.lease_expires_at, at)}."
            )
    elif status == "available":
        ahead = explain_sql.ahead_in_queue(
            conn, row.queue, row.priority, row.run_at, row.id, AHEAD_CAP
        )
        facts = {"queued_ahead": ahead}
        paused = {q.name for q in store.queues.settings(conn) if q.paused}
        if row.queue in paused:
            reason = "queue_paused"
            text = (
                f"is runnable at step {row.step!r}, but its queue {row.queue!r} is paused "
                "on every runner (resume it with gen-durable resume or resume_queue)."
            )
        elif runner_problem is not None:
            reason, text = runner_problem
            text = f"is runnable at step {row.step!r}, but {text}"
        else:
            reason = "runnable"
            queued = (
                f"it is next in queue {row.queue!r}"
                if ahead == 0
                else f"{_count(ahead, AHEAD_CAP)} runnable instance(s) are ahead of it in "
                f"queue {row.queue!r}"
            )
            text = (
                f"is runnable at step {row.step!r} and waits for a free worker: {queued} "
                f"(served by {_names(base['runners'])})."
            )
    elif status == "scheduled":
        facts = {"run_at": row.run_at}
        due = row.run_at is not None and row.run_at <= at
        if row.error is not None:
            reason = "backing_off"
            text = (
                f"is backing off: attempt {row.attempt} of {row.max_attempts} of step "
                f"{row.step!r} failed with {_error(row.error)}; the next attempt is due "
                f"{_when(row.run_at, at)}."
            )
        else:
            reason = "scheduled"
            text = f"is scheduled to run step {row.step!r} {_when(row.run_at, at)}."
        if due:
            text += " It is due: a runner's scheduler makes it runnable within its poll interval."
            if runner_problem is not None:
                reason, problem = runner_problem
                text += f" But {problem}"
        elif runner_problem is not None:
            notes.append(_sentence(runner_problem[1]))
    elif status == "awaiting" and row.join_policy is not None:
        children = explain_sql.unfinished_children(conn, row.id)
        facts = {
            "waiting_for_children": tuple(children),
            "pending_children": row.pending_children,
        }
        reason = "awaiting_children"
        text = (
            f"is waiting for {row.pending_children} child instance(s) of its latest Spawn "
            f"({_ids(children, row.pending_children)}; on_failure={row.join_policy!r}), then "
            f"resumes at step {row.step!r}."
        )
        if runner_problem is not None:
            notes.append(_sentence(runner_problem[1]))
    elif status == "awaiting":
        names = tuple(row.await_names or ())
        pending_names = {p.name for p in pending}
        facts = {"awaiting": names, "await_all": row.await_all, "run_at": row.run_at}
        reason = "awaiting_signals"
        which = _quoted(names)
        mode = f"all of {which}" if row.await_all and len(names) > 1 else which
        text = f"is waiting for signal {mode}, then resumes at step {row.step!r}."
        have = [n for n in names if n in pending_names]
        missing = [n for n in names if n not in pending_names]
        if have:
            text += f" Already pending: {_quoted(have)}; still missing: {_quoted(missing)}."
        else:
            text += " None of them is pending."
        others = [p.name for p in pending if p.name not in names]
        if others:
            text += f" Other pending signals (not awaited): {_quoted(others)}."
        if row.run_at is not None:
            resume = row.timeout_step or row.step
            text += f" It times out {_when(row.run_at, at)} and then resumes at step {resume!r}."
        if runner_problem is not None:
            notes.append(_sentence(runner_problem[1]))
    elif status == "blocked":
        holders = explain_sql.key_holders(conn, row.concurrency_key)
        facts = {"key_holders": tuple(holders)}
        reason = "blocked"
        limit = row.concurrency_limit or 1
        if holders:
            text = (
                f"is blocked: its concurrency key {row.concurrency_key!r} allows {limit} "
                f"running at once, and {_ids(holders, len(holders))} hold(s) it. It becomes "
                "runnable when one of them stops running."
            )
        else:
            text = (
                f"is blocked on its concurrency key {row.concurrency_key!r}, yet no instance "
                "with that key is running: a runner's reaper releases it shortly."
            )
        if runner_problem is not None:
            notes.append(_sentence(runner_problem[1]))
    else:  # pragma: no cover - every status is handled above
        reason = "scheduled"
        text = f"has status {status!r}."
    summary = " ".join([f"{label} {text}", *notes])
    return Explanation(**base, **facts, reason=reason, summary=summary, notes=tuple(notes))


def _runner_problem(
    row: Any,
    nodes: Sequence[Any],
    serving: Sequence[Any],
    knowing: Sequence[Any],
    heartbeat_timeout: float,
) -> tuple[Reason, str] | None:
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
            f"none of the runners serving queue {row.queue!r} ({_names([n.id for n in serving])})"
            f" knows class {row.fsm!r}: import the module that defines it in the worker "
            "(gen-durable run --import MODULE) and restart it."
        )
    return None


def _no_runner_at_all(heartbeat_timeout: float, tail: str = "") -> str:
    extra = f", {tail}" if tail else ""
    return f"no runner is live (none sent a heartbeat in the last {heartbeat_timeout:g}s){extra}."


def _finished(row: Any, at: datetime) -> str:
    when = _when(row.finished_at, at)
    if row.status == "done":
        return f"is finished: done {when}, at step {row.step!r}."
    if row.status == "cancelled":
        return f"is finished: cancelled {when} ({_error(row.error)})."
    return (
        f"is finished: failed {when} at step {row.step!r} after attempt {row.attempt} of "
        f"{row.max_attempts}, with {_error(row.error)}."
    )


def _error(error: JSON) -> str:
    if isinstance(error, dict):
        kind = error.get("type") or "error"
        message = error.get("message")
        return f"{kind}: {message}" if message else str(kind)
    return "no recorded error" if error is None else str(error)


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "(no time recorded)"
    seconds = (moment - now).total_seconds()
    stamp = moment.isoformat(timespec="seconds")
    if abs(seconds) < 1:
        return f"at {stamp} (now)"
    span = _span(abs(seconds))
    return f"at {stamp} (in {span})" if seconds > 0 else f"at {stamp} ({span} ago)"


def _span(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else ""]
    parts += [f"{minutes}m" if minutes else "", f"{secs}s" if secs or whole == 0 else ""]
    return " ".join(p for p in parts if p)


def _key(key: str | None) -> str:
    return f", key {key!r}" if key else ""


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names)


def _ids(ids: Sequence[int], total: int) -> str:
    shown = "instance " + ", ".join(str(i) for i in ids) if ids else "no unfinished child found"
    return shown + (f" and {total - len(ids)} more" if total > len(ids) and ids else "")


def _count(n: int, cap: int) -> str:
    return f"at least {n}" if n >= cap else str(n)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
