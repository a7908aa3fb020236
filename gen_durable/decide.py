"""The pure decision: a step's snapshot plus its outcome (or failure) -> what to commit.

No I/O and no clock: the storage layer turns a :class:`Decision` into one fenced UPDATE,
with times relative to the database's ``now()``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import attrs

from gen_durable.errors import InvalidOutcome, shown
from gen_durable.fsm import InsertSpec
from gen_durable.outcomes import (
    KEEP,
    Await,
    Cancel,
    Done,
    Fail,
    Next,
    Outcome,
    RateLimited,
    Sleep,
    Spawn,
)
from gen_durable.types import JSON

Kind = Literal[
    "next", "await", "sleep", "spawn", "rate_limited", "done", "fail", "cancel", "retry", "error"
]
DecidedStatus = Literal["ready", "awaiting", "done", "failed", "cancelled"]


@attrs.frozen
class StepSnapshot:
    """What decide needs to know about the step that ran."""

    instance_id: int
    fsm: str
    step: str
    steps: tuple[str, ...]
    attempt: int
    max_attempts: int
    max_children: int | None = None
    """The most children one Spawn may insert (None: no limit)."""


@attrs.frozen
class Failure:
    """A step that raised (or returned an invalid outcome).

    ``retry_delay`` is the backoff the executor drew for this attempt; ``compensation`` is
    what ``on_error`` returned once attempts were exhausted (None: fail).
    """

    error: JSON
    retry_delay: float
    compensation: Outcome | None = None


@attrs.frozen
class Decision:
    """The row the transition writes.

    ``status`` "ready" becomes ``available`` or ``scheduled`` depending on whether the
    wake-up time (``delay`` seconds after the database's now, or ``run_at``) has passed.
    """

    kind: Kind
    status: DecidedStatus
    step: str
    state: JSON
    delay: float | None = None
    run_at: datetime | None = None
    await_names: tuple[str, ...] | None = None
    await_all: bool = False
    await_limit: int | None = None
    timeout_step: str | None = None
    result: JSON = None
    error: JSON = None
    reset_attempt: bool = True
    children: tuple[InsertSpec, ...] = ()
    """A Spawn's children, inserted with the transition (status "awaiting")."""
    join_policy: str | None = None
    """A Spawn's ``on_failure``: when the parked parent resumes."""
    give_back_attempt: bool = False
    """``RateLimited``: the attempt counted at claim is returned."""

    @property
    def finished(self) -> bool:
        """True when the decision ends the instance."""
        return self.status in ("done", "failed", "cancelled")


def decide(snap: StepSnapshot, outcome: Outcome | Failure, state: JSON) -> Decision:
    """Decide the transition of one step.

    ``state`` is the state to store (already turned into JSON by the caller). Raises
    :class:`InvalidOutcome` when the outcome names an undeclared step or is not an outcome.
    """
    if isinstance(outcome, Failure):
        return _decide_failure(snap, outcome, state)
    return _decide_outcome(snap, outcome, state, error=None)


def _decide_failure(snap: StepSnapshot, failure: Failure, state: JSON) -> Decision:
    if snap.attempt < snap.max_attempts:
        return Decision(
            kind="retry",
            status="ready",
            step=snap.step,
            state=state,
            delay=failure.retry_delay,
            error=failure.error,
            reset_attempt=False,
        )
    if failure.compensation is not None:
        return _decide_outcome(snap, failure.compensation, state, error=failure.error)
    return Decision(
        kind="error",
        status="failed",
        step=snap.step,
        state=state,
        error=failure.error,
        reset_attempt=False,  # keep the count visible: it failed after this many attempts
    )


def _decide_outcome(snap: StepSnapshot, outcome: Outcome, state: JSON, error: JSON) -> Decision:
    if isinstance(outcome, Next):
        _check_step(snap, outcome.step, "Next")
        return Decision(
            kind="next",
            status="ready",
            step=outcome.step,
            state=state,
            delay=outcome.delay if outcome.run_at is None else None,
            run_at=outcome.run_at,
            error=error,
        )
    if isinstance(outcome, Await):
        _check_step(snap, outcome.then, "Await then")
        if outcome.on_timeout is not None:
            _check_step(snap, outcome.on_timeout, "Await on_timeout")
        return Decision(
            kind="await",
            status="awaiting",
            step=outcome.then,
            state=state,
            delay=outcome.timeout,
            await_names=outcome.signals,
            await_all=outcome.all,
            await_limit=outcome.limit,
            timeout_step=outcome.on_timeout,
            error=error,
        )
    if isinstance(outcome, Sleep):
        _check_step(snap, outcome.then, "Sleep then")
        return Decision(
            kind="sleep",
            status="ready",
            step=outcome.then,
            state=state,
            delay=outcome.seconds,
            run_at=outcome.until,
            error=error,
        )
    if isinstance(outcome, Spawn):
        _check_step(snap, outcome.then, "Spawn then")
        count = len(outcome.children)
        if snap.max_children is not None and count > snap.max_children:
            raise InvalidOutcome(
                f"{snap.fsm}.{snap.step}: Spawn of {count} children exceeds the limit of "
                f"{snap.max_children} (Runner(max_children=...))"
            )
        return Decision(
            kind="spawn",
            status="awaiting",
            step=outcome.then,
            state=state,
            children=outcome.children,
            join_policy=outcome.on_failure,
            error=error,
        )
    if isinstance(outcome, Done):
        return Decision(
            kind="done",
            status="done",
            step=snap.step,
            state=state,
            result=outcome.result,
            error=error,
        )
    if isinstance(outcome, Fail):
        return Decision(
            kind="fail",
            status="failed",
            step=snap.step,
            state=state,
            error=error if error is not None else _reason("Fail", outcome.reason),
        )
    if isinstance(outcome, RateLimited):
        return Decision(
            kind="rate_limited",
            status="ready",
            step=snap.step,
            state=state,
            delay=outcome.retry_after,
            error=error,
            reset_attempt=False,
            give_back_attempt=True,
        )
    if isinstance(outcome, Cancel):
        return Decision(
            kind="cancel",
            status="cancelled",
            step=snap.step,
            state=state,
            error=error if error is not None else _reason("Cancel", outcome.reason),
        )
    raise InvalidOutcome(
        f"{snap.fsm}.{snap.step} returned {shown(outcome)}, which is not an outcome "
        "(Next, Await, Sleep, Spawn, RateLimited, Done, Fail or Cancel)"
    )


def outcome_state(outcome: object, current: object) -> object:
    """The state an outcome asks to store: its ``state=`` or, when omitted, ``current``."""
    value = getattr(outcome, "state", KEEP)
    return current if value is KEEP else value


def _check_step(snap: StepSnapshot, name: str, where: str) -> None:
    if name not in snap.steps:
        raise InvalidOutcome(
            f"{snap.fsm}.{snap.step}: {where} names {name!r}, which is not a step of "
            f"{snap.fsm} (steps: {', '.join(snap.steps)})"
        )


def _reason(kind: str, reason: str) -> JSON:
    return {"type": kind, "message": reason}
