"""The pure decision: a step's snapshot plus its outcome (or failure) -> its transition.

No I/O and no clock: :func:`decide` returns the :class:`Transition` record that the storage
layer writes as one row of a fenced, grouped UPDATE, with times relative to the
database's ``now()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import attrs

from gen_durable.domain import outcomes as out
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.options import HistoryMode
from gen_durable.domain.outcomes import KEEP, Outcome
from gen_durable.errors import InvalidOutcome, shown
from gen_durable.types import FINISHED, JSON

Kind = Literal[
    "next", "await", "sleep", "spawn", "rate_limited", "done", "fail", "cancel", "retry", "error"
]
Status = Literal["available", "scheduled", "awaiting", "done", "failed", "cancelled"]
"""The statuses a transition writes (of :class:`gen_durable.types.Status`)."""


@attrs.frozen
class StepSnapshot:
    """What decide needs to know about the step that ran (and what its commit is fenced by)."""

    instance_id: int
    fsm: str
    step: str
    steps: tuple[str, ...]
    attempt: int
    max_attempts: int
    max_children: int | None = None
    """The most children one Spawn may insert (None: no limit)."""
    lease_token: uuid.UUID | None = None
    """The lease the step ran under: its commit is fenced by it."""
    version: int = 0
    """The transition number the step started from."""
    awaited: tuple[int, ...] = ()
    """The ids of the signals of its pack: consumed by its transition."""
    history: HistoryMode = "none"
    """What of its transitions the class records in ``gd_history``."""


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
class Route:
    """Where the step a transition makes runnable stands in line: its rate-limit bucket
    and, when it changed, its concurrency key."""

    rate_key: str | None = None
    rate_weight: float | None = None
    rekey: bool = False
    """The class's concurrency key function gave another key for the new state."""
    concurrency_key: str | None = None
    """With ``rekey``: the key the instance moves to (None: no key)."""
    concurrency_limit: int | None = None
    """With ``rekey``: the class's limit, for an instance that had no key before."""


UNROUTED = Route()
"""No bucket, no new key: what most steps get (shared, not built per step)."""
Router = Callable[[str], Route]
"""The route of the step a transition makes runnable, given that step's name."""


@attrs.frozen
class Transition:
    """A step's result: the one record from :func:`decide` to the grouped commit.

    ``status`` is the instance's status after the commit; ``available`` becomes
    ``scheduled`` in the commit while the wake-up time (``delay`` seconds after the
    database's now, or ``run_at``) lies ahead. ``state`` is the new state's JSON text,
    encoded once (None: the stored state stays, as after a failure).
    """

    instance_id: int
    lease_token: uuid.UUID | None
    version: int
    kind: Kind
    status: Status
    step: str
    state: str | None
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
    consumed: tuple[int, ...] = ()
    """The signals its commit consumes: the pack, unless the same step runs again."""
    route: Route = UNROUTED
    fsm: str = ""
    from_step: str = ""
    attempt: int = 0
    history: bool = False
    """Its ``gd_history`` row is written with it if it lands."""
    duration_ms: float = 0.0
    state_version: int | None = None
    """The version of ``state`` when it differs from the row's (a state upgraded on load);
    None: the row's stays."""

    @property
    def finished(self) -> bool:
        """True when the transition ends the instance."""
        return self.status in FINISHED


def decide(
    snap: StepSnapshot,
    outcome: Outcome | Failure,
    state: str | None,
    *,
    route: Router | None = None,
    seconds: float = 0.0,
) -> Transition:
    """Decide the transition of one step.

    ``state`` is the state to store, already encoded as JSON text by the caller (None:
    the stored state stays). ``route`` gives the rate-limit bucket and concurrency key of
    the step the transition makes runnable; ``seconds`` is how long the step ran. Raises
    :class:`InvalidOutcome` when the outcome names an undeclared step or is not an outcome.
    """
    if isinstance(outcome, Failure):
        fields = _failure(snap, outcome)
    else:
        fields = _outcome(snap, outcome, error=None)
    kind: Kind = fields["kind"]
    status: Status = fields["status"]
    again = kind in ("retry", "rate_limited", "error")  # the same pack comes back
    finished = status in FINISHED
    error = fields.get("error")
    return Transition(
        instance_id=snap.instance_id,
        lease_token=snap.lease_token,
        version=snap.version,
        state=state,
        consumed=() if again else snap.awaited,
        route=UNROUTED if finished or route is None else route(fields["step"]),
        fsm=snap.fsm,
        from_step=snap.step,
        attempt=snap.attempt,
        history=snap.history == "all" or (snap.history == "errors" and _failing(kind, error)),
        duration_ms=round(seconds * 1000.0, 3),
        **fields,
    )


def _failing(kind: str, error: JSON) -> bool:
    """What ``history = "errors"`` records: a step that raised, or a ``Fail``."""
    raised = isinstance(error, dict) and bool(error.get("traceback"))
    return kind in ("retry", "error", "fail") or raised


def _ready(delay: float | None, run_at: datetime | None) -> Status:
    """Runnable now, or once its wake-up time comes (the commit decides by the database's
    clock; this is the status when no wake-up time is given)."""
    return "available" if run_at is None and not delay else "scheduled"


def _failure(snap: StepSnapshot, failure: Failure) -> dict[str, Any]:
    if snap.attempt < snap.max_attempts:
        return {
            "kind": "retry",
            "status": _ready(failure.retry_delay, None),
            "step": snap.step,
            "delay": failure.retry_delay,
            "error": failure.error,
            "reset_attempt": False,
        }
    if failure.compensation is not None:
        return _outcome(snap, failure.compensation, error=failure.error)
    return {
        "kind": "error",
        "status": "failed",
        "step": snap.step,
        "error": failure.error,
        "reset_attempt": False,  # keep the count visible: it failed after this many attempts
    }


def _outcome(snap: StepSnapshot, outcome: Outcome, error: JSON) -> dict[str, Any]:
    if isinstance(outcome, out.Next):
        _check_step(snap, outcome.step, "Next")
        delay = outcome.delay if outcome.run_at is None else None
        return {
            "kind": "next",
            "status": _ready(delay, outcome.run_at),
            "step": outcome.step,
            "delay": delay,
            "run_at": outcome.run_at,
            "error": error,
        }
    if isinstance(outcome, out.Await):
        _check_step(snap, outcome.then, "Await then")
        if outcome.on_timeout is not None:
            _check_step(snap, outcome.on_timeout, "Await on_timeout")
        return {
            "kind": "await",
            "status": "awaiting",
            "step": outcome.then,
            "delay": outcome.timeout,
            "await_names": outcome.signals,
            "await_all": outcome.all,
            "await_limit": outcome.limit,
            "timeout_step": outcome.on_timeout,
            "error": error,
        }
    if isinstance(outcome, out.Sleep):
        _check_step(snap, outcome.then, "Sleep then")
        return {
            "kind": "sleep",
            "status": _ready(outcome.seconds, outcome.until),
            "step": outcome.then,
            "delay": outcome.seconds,
            "run_at": outcome.until,
            "error": error,
        }
    if isinstance(outcome, out.Spawn):
        _check_step(snap, outcome.then, "Spawn then")
        count = len(outcome.children)
        if snap.max_children is not None and count > snap.max_children:
            raise InvalidOutcome(
                f"{snap.fsm}.{snap.step}: Spawn of {count} children exceeds the limit of "
                f"{snap.max_children} (Runner(max_children=...))"
            )
        return {
            "kind": "spawn",
            "status": "awaiting",
            "step": outcome.then,
            "children": outcome.children,
            "join_policy": outcome.on_failure,
            "error": error,
        }
    if isinstance(outcome, out.Done):
        return {
            "kind": "done",
            "status": "done",
            "step": snap.step,
            "result": outcome.result,
            "error": error,
        }
    if isinstance(outcome, out.Fail):
        reason = error if error is not None else _reason("Fail", outcome.reason)
        return {"kind": "fail", "status": "failed", "step": snap.step, "error": reason}
    if isinstance(outcome, out.RateLimited):
        return {
            "kind": "rate_limited",
            "status": _ready(outcome.retry_after, None),
            "step": snap.step,
            "delay": outcome.retry_after,
            "error": error,
            "reset_attempt": False,
            "give_back_attempt": True,
        }
    if isinstance(outcome, out.Cancel):
        reason = error if error is not None else _reason("Cancel", outcome.reason)
        return {"kind": "cancel", "status": "cancelled", "step": snap.step, "error": reason}
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
