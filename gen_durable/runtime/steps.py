"""A step as the runtime sees it: the claimed row, the report, and what surrounds the
step's code — turning its return value into an outcome, the route of the step it makes
runnable, the error document of a failure, and the step events."""

from __future__ import annotations

import json
import traceback
import uuid
from typing import Any

import attrs

from gen_durable import events
from gen_durable.domain import definitions as registry
from gen_durable.domain import routing, serialization, versioning
from gen_durable.domain.decide import UNROUTED, Route, Router, Transition
from gen_durable.domain.outcomes import OUTCOME_TYPES, Done, Outcome
from gen_durable.errors import InvalidOutcome, shown
from gen_durable.types import JSON, Child, Signal


@attrs.frozen
class Claimed:
    """A claimed instance with the signal pack it wakes up to."""

    id: int
    fsm: str
    queue: str
    step: str
    state_text: str
    """The stored state's JSON text. Each use parses a copy of its own
    (:meth:`stored_state`): a step may change what it was handed in place, and a failed
    attempt's changes must reach neither its retry nor ``on_error`` nor the routing of
    the failure."""
    attempt: int
    max_attempts: int
    version: int
    lease_token: uuid.UUID
    correlation_key: str | None
    parent_id: int | None
    awaited: tuple[Signal, ...] = ()
    children: tuple[Child, ...] = ()
    trace_context: str | None = None
    """The trace context stored at insert (see :mod:`gen_durable.tracing`)."""
    concurrency_key: str | None = None
    """The concurrency key it holds while it runs."""
    state_version: int = 1
    """The version of ``state`` (upgraded on load when the class's code is newer)."""

    def stored_state(self) -> JSON:
        """A fresh copy of the state as stored (as claimed, before any step ran)."""
        state: JSON = json.loads(self.state_text)
        return state


def loadable(cls: type[registry.Definition], claimed: Claimed) -> Claimed:
    """The claimed row as the class's code runs it: its state upgraded to the code's
    ``state_version`` and its step renamed through ``step_aliases``. Called only when the
    row's version differs or its step is an alias. Raises
    :class:`~gen_durable.domain.versioning.StateUpgradeFailed`."""
    step = versioning.resolve_step(cls, claimed.step) or claimed.step
    if claimed.state_version == cls.state_version:
        return attrs.evolve(claimed, step=step)
    state = versioning.upgrade(cls, claimed.stored_state(), claimed.state_version)
    return attrs.evolve(claimed, step=step, state_text=serialization.encode_json(state))


def parked(claimed: Claimed, error: JSON) -> Transition:
    """The report's record of a row parked by a failing upgrade (written by
    :func:`gen_durable.store.upgrades.park`, not by the grouped commit)."""
    return Transition(
        instance_id=claimed.id,
        lease_token=claimed.lease_token,
        version=claimed.version,
        kind="error",
        status="scheduled",
        step=claimed.step,
        state=None,
        error=error,
        reset_attempt=False,
        give_back_attempt=True,
        fsm=claimed.fsm,
        from_step=claimed.step,
        attempt=claimed.attempt,
    )


@attrs.frozen
class StepReport:
    """What happened to one step (for logging, telemetry and tests)."""

    instance_id: int
    fsm: str
    step: str
    attempt: int
    decision: Transition
    """The step's transition (its ``kind``, ``status``, next ``step``, ``result``, ``error``)."""
    committed: bool
    duration: float


def as_outcome(cls: type[registry.Definition], value: Any) -> Outcome:
    if isinstance(value, OUTCOME_TYPES):
        if isinstance(value, Done):
            return Done(serialization.unstructure(value.result, "result"))
        return value
    if cls._gd_kind == "job":
        return Done(serialization.unstructure(value, "result"))
    raise InvalidOutcome(
        f"{cls.name} returned {shown(value)}; a step returns Next, Await, Sleep, Spawn, Done, "
        "Fail or Cancel"
    )


def router(
    cls: type[registry.Definition],
    claimed: Claimed,
    state: routing.StateOf,
    *,
    safe: bool = False,
) -> Router:
    """The rate-limit bucket and concurrency key of the step a transition makes runnable,
    for the state it stores (read only if the class's limits need it). ``safe``: for a
    failure, whose recording matters more than its route — a key or bucket function that
    raises leaves it unlimited, under its old key.
    """

    def route(step: str) -> Route:
        try:
            bucket = routing.rate_bucket_of(cls, step, state)
            rekey, key = routing.next_concurrency_key(
                cls, claimed.concurrency_key, claimed.stored_state, state
            )
        except Exception:
            if not safe:
                raise
            return UNROUTED
        rate_key, weight = bucket if bucket is not None else (None, None)
        if not rekey:
            return UNROUTED if bucket is None else Route(rate_key, weight)
        limit = cls.concurrency_limit if key is not None else None
        return Route(rate_key, weight, True, key, limit)

    return route


ERROR_TEXT_LIMIT = 64 * 1024
"""Characters of an exception's message and of its traceback kept in the stored error."""


def error_json(exc: BaseException, claimed: Claimed) -> dict[str, Any]:
    return {
        "type": type(exc).__name__,
        "message": clip(str(exc)),
        "step": claimed.step,
        "attempt": claimed.attempt,
        "traceback": clip("".join(traceback.format_exception(exc))),
    }


def clip(text: str) -> str:
    """The start and the end of a long text (where an error's cause and site are)."""
    if len(text) <= ERROR_TEXT_LIMIT:
        return text
    half = ERROR_TEXT_LIMIT // 2
    return f"{text[:half]}\n… ({len(text) - 2 * half} characters cut) …\n{text[-half:]}"


def event_fields(claimed: Claimed) -> dict[str, Any]:
    return {
        "instance_id": claimed.id,
        "fsm": claimed.fsm,
        "step": claimed.step,
        "queue": claimed.queue,
        "attempt": claimed.attempt,
        "max_attempts": claimed.max_attempts,
    }


def emit_stop(claimed: Claimed, report: StepReport) -> None:
    """The ``step.stop`` event, and ``retry`` when a failed attempt will run again."""
    if not events.active("step.stop") and not events.active("retry"):
        return
    decision = report.decision
    fields = event_fields(claimed)
    events.emit(
        "step.stop",
        **fields,
        kind=decision.kind,
        status=decision.status,
        next_step=decision.step,
        committed=report.committed,
        duration=report.duration,
    )
    if decision.kind == "retry" and report.committed:
        error = decision.error if isinstance(decision.error, dict) else {}
        events.emit("retry", **fields, delay=decision.delay, error_type=error.get("type"))
