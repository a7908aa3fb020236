"""The pure decision (decide.py): snapshot + outcome-or-Failure + state -> Transition."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain import registry
from gen_durable.domain.decide import (
    UNROUTED,
    Failure,
    Route,
    StepSnapshot,
    Transition,
    decide,
    outcome_state,
)
from gen_durable.domain.definitions import Job
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.outcomes import (
    KEEP,
    Await,
    Cancel,
    Done,
    Fail,
    Next,
    RateLimited,
    Sleep,
    Spawn,
)
from gen_durable.errors import DurableError, InvalidOutcome

FINISHED_STATUSES = {"done", "failed", "cancelled"}
READY = {"available", "scheduled"}


def ready(delay: float | None, run_at: datetime | None = None) -> str:
    """Runnable now, or (given a wake-up time) once the commit finds it due."""
    return "available" if run_at is None and not delay else "scheduled"


CHILD_NAME = "unit-tests/decide-child"


@pytest.fixture(scope="module")
def specs() -> Iterator[tuple[InsertSpec, ...]]:
    class Child(Job):
        name = CHILD_NAME

        def perform(self, args: Any) -> None:
            return None

    yield tuple(Child.new(args={"n": n}) for n in range(3))
    registry.forget(CHILD_NAME)


# --- strategies -------------------------------------------------------------------

# NUL cannot be stored; U+001F separates the names of an Await in one text value.
storable = st.characters(codec="utf-8", exclude_characters="\x00")
step_names = st.text(storable, min_size=1, max_size=10)
signal_names = st.text(storable.filter(lambda c: c != "\x1f"), min_size=1, max_size=5)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
aware = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
seconds = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
errors = st.fixed_dictionaries({"type": st.text(max_size=10), "message": st.text(max_size=20)})


@st.composite
def snapshots(draw: st.DrawFn, exhausted: bool | None = None) -> StepSnapshot:
    """A snapshot; ``exhausted`` True/False forces attempt >= / < max_attempts."""
    steps = tuple(draw(st.lists(step_names, min_size=1, max_size=6, unique=True)))
    if exhausted is None:
        max_attempts = draw(st.integers(min_value=1, max_value=50))
        attempt = draw(st.integers(min_value=1, max_value=60))
    elif exhausted:
        max_attempts = draw(st.integers(min_value=1, max_value=50))
        attempt = draw(st.integers(min_value=max_attempts, max_value=60))
    else:
        max_attempts = draw(st.integers(min_value=2, max_value=50))
        attempt = draw(st.integers(min_value=1, max_value=max_attempts - 1))
    return StepSnapshot(
        instance_id=draw(st.integers(min_value=1, max_value=2**63 - 1)),
        fsm=draw(st.text(min_size=1, max_size=10)),
        step=draw(st.sampled_from(steps)),
        steps=steps,
        attempt=attempt,
        max_attempts=max_attempts,
    )


def declared_step(snap: StepSnapshot) -> st.SearchStrategy[str]:
    return st.sampled_from(snap.steps)


def undeclared_step(snap: StepSnapshot) -> st.SearchStrategy[str]:
    return step_names.filter(lambda name: name not in snap.steps)


@st.composite
def outcomes_to(draw: st.DrawFn, target: st.SearchStrategy[str]) -> Any:
    """A Next, Await or Sleep whose step(s) are drawn from ``target``."""
    kind = draw(st.sampled_from(["next", "next_at", "await", "await_timeout", "sleep", "until"]))
    to = draw(target)
    if kind == "next":
        return Next(to, delay=draw(st.none() | seconds))
    if kind == "next_at":
        return Next(to, run_at=draw(aware))
    if kind == "await":
        names = draw(st.lists(signal_names, min_size=1, max_size=3))
        return Await(*names, then=to, all=draw(st.booleans()))
    if kind == "await_timeout":
        return Await(
            "sig",
            then=to,
            timeout=draw(seconds),
            on_timeout=draw(target),
            limit=draw(st.none() | st.integers(min_value=1, max_value=100)),
        )
    if kind == "sleep":
        return Sleep(draw(seconds), then=to)
    return Sleep(until=draw(aware), then=to)


def terminal_outcomes() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(Done, json_values),
        st.builds(Fail, st.text(max_size=20)),
        st.builds(Cancel, st.text(max_size=20)),
    )


def snap(**overrides: Any) -> StepSnapshot:
    fields: dict[str, Any] = {
        "instance_id": 7,
        "fsm": "shop.Checkout",
        "step": "start",
        "steps": ("start", "pay", "ship", "compensate"),
        "attempt": 1,
        "max_attempts": 3,
    }
    fields.update(overrides)
    return StepSnapshot(**fields)


# --- Failure: retry, fail, compensation -------------------------------------------


@given(data=st.data(), retry_delay=seconds, error=errors, state=json_values)
def test_failure_with_attempts_left_is_a_retry_of_the_same_step(
    data: st.DataObject, retry_delay: float, error: dict[str, str], state: Any
) -> None:
    s = data.draw(snapshots(exhausted=False))
    assert s.attempt < s.max_attempts
    compensation = data.draw(st.none() | terminal_outcomes() | outcomes_to(declared_step(s)))
    d = decide(s, Failure(error, retry_delay, compensation), state)
    assert d.kind == "retry"
    assert d.status == ready(retry_delay)
    assert d.step == s.step
    assert d.reset_attempt is False
    assert d.delay == retry_delay
    assert d.run_at is None
    assert d.error == error
    assert d.state is state
    assert not d.finished


@given(data=st.data(), retry_delay=seconds, error=errors, state=json_values)
def test_failure_without_attempts_left_or_compensation_fails(
    data: st.DataObject, retry_delay: float, error: dict[str, str], state: Any
) -> None:
    s = data.draw(snapshots(exhausted=True))
    assert s.attempt >= s.max_attempts
    d = decide(s, Failure(error, retry_delay, None), state)
    assert d.kind == "error"
    assert d.status == "failed"
    assert d.finished
    assert d.step == s.step
    assert d.error == error
    assert d.state is state
    assert d.delay is None and d.run_at is None


@given(data=st.data(), error=errors, state=json_values)
def test_exhausted_failure_with_compensation_is_the_compensations_decision_with_the_error(
    data: st.DataObject, error: dict[str, str], state: Any
) -> None:
    s = data.draw(snapshots(exhausted=True))
    assert s.attempt >= s.max_attempts
    compensation = data.draw(terminal_outcomes() | outcomes_to(declared_step(s)))
    d = decide(s, Failure(error, 5.0, compensation), state)
    plain = decide(s, compensation, state)
    assert d == attrs.evolve(plain, error=error)
    assert d.kind != "retry"
    assert d.reset_attempt is True


def test_attempt_equal_to_max_attempts_is_the_last_one() -> None:
    s = snap(attempt=3, max_attempts=3)
    assert decide(s, Failure({"m": 1}, 1.0), {}).kind == "error"
    assert decide(snap(attempt=2, max_attempts=3), Failure({"m": 1}, 1.0), {}).kind == "retry"


def test_attempt_beyond_max_attempts_fails_too() -> None:
    # max_attempts can be lowered while an instance is running
    assert decide(snap(attempt=9, max_attempts=3), Failure({}, 1.0), None).status == "failed"


def test_compensation_fail_keeps_the_step_error_not_the_fail_reason() -> None:
    error = {"type": "KeyError", "message": "'sku'"}
    d = decide(snap(attempt=3), Failure(error, 0.0, Fail("gave up")), {"a": 1})
    assert (d.kind, d.status, d.error) == ("fail", "failed", error)


def test_compensation_next_moves_on_and_records_the_error() -> None:
    error = {"type": "Boom"}
    d = decide(snap(attempt=3), Failure(error, 9.0, Next("compensate", delay=2)), {"a": 1})
    assert (d.kind, d.status, d.step, d.delay, d.error) == (
        "next",
        "scheduled",
        "compensate",
        2,
        error,
    )
    assert d.reset_attempt is True
    assert not d.finished


def test_compensation_done_finishes_with_its_result() -> None:
    d = decide(snap(attempt=3), Failure({"x": 1}, 0.0, Done({"refunded": True})), None)
    assert (d.status, d.result, d.error) == ("done", {"refunded": True}, {"x": 1})


@given(data=st.data(), error=errors)
def test_compensation_to_an_undeclared_step_is_invalid(
    data: st.DataObject, error: dict[str, str]
) -> None:
    s = data.draw(snapshots(exhausted=True))
    assert s.attempt >= s.max_attempts
    compensation = data.draw(outcomes_to(undeclared_step(s)))
    with pytest.raises(InvalidOutcome):
        decide(s, Failure(error, 1.0, compensation), {})


def test_compensation_that_is_not_an_outcome_is_invalid() -> None:
    with pytest.raises(InvalidOutcome):
        decide(snap(attempt=3), Failure({}, 1.0, "done"), {})  # type: ignore[arg-type]


# --- outcomes ---------------------------------------------------------------------


@given(data=st.data(), state=json_values)
def test_transitions_to_declared_steps_are_ready_or_awaiting_never_finished(
    data: st.DataObject, state: Any
) -> None:
    s = data.draw(snapshots())
    outcome = data.draw(outcomes_to(declared_step(s)))
    d = decide(s, outcome, state)
    assert not d.finished
    assert d.reset_attempt is True
    assert d.error is None
    assert d.state is state
    assert d.step == (outcome.step if isinstance(outcome, Next) else outcome.then)
    assert d.status in ({"awaiting"} if isinstance(outcome, Await) else READY)


@given(data=st.data())
def test_transitions_to_undeclared_steps_raise_invalid_outcome(data: st.DataObject) -> None:
    s = data.draw(snapshots())
    outcome = data.draw(outcomes_to(undeclared_step(s)))
    with pytest.raises(InvalidOutcome) as info:
        decide(s, outcome, {})
    assert s.fsm in str(info.value)


def test_await_with_an_undeclared_on_timeout_step_is_invalid() -> None:
    outcome = Await("paid", then="ship", timeout=60, on_timeout="nowhere")
    with pytest.raises(InvalidOutcome, match="nowhere"):
        decide(snap(), outcome, {})


@given(data=st.data(), delay=st.none() | seconds)
def test_next_with_delay(data: st.DataObject, delay: float | None) -> None:
    s = data.draw(snapshots())
    to = data.draw(declared_step(s))
    d = decide(s, Next(to, delay=delay), {})
    assert (d.kind, d.status, d.step, d.delay, d.run_at) == ("next", ready(delay), to, delay, None)
    assert d.await_names is None and d.timeout_step is None


@given(when=aware)
def test_next_with_run_at(when: datetime) -> None:
    d = decide(snap(), Next("ship", run_at=when), {})
    assert (d.kind, d.status, d.step, d.delay, d.run_at) == (
        "next",
        "scheduled",
        "ship",
        None,
        when,
    )


def test_next_may_loop_to_the_current_step() -> None:
    d = decide(snap(step="pay"), Next("pay"), {})
    assert d.step == "pay" and d.reset_attempt is True


@given(
    names=st.lists(signal_names, min_size=1, max_size=4),
    all_=st.booleans(),
    limit=st.none() | st.integers(min_value=1, max_value=1000),
    timeout=st.none() | seconds,
)
def test_await_carries_signals_pack_and_timeout(
    names: list[str], all_: bool, limit: int | None, timeout: float | None
) -> None:
    on_timeout = "compensate" if timeout is not None else None
    outcome = Await(
        *names, then="ship", all=all_, limit=limit, timeout=timeout, on_timeout=on_timeout
    )
    d = decide(snap(), outcome, {"s": 1})
    assert d.kind == "await" and d.status == "awaiting" and d.step == "ship"
    assert d.await_names == tuple(dict.fromkeys(names))
    assert d.await_all is all_
    assert d.await_limit == limit
    assert d.delay == timeout
    assert d.timeout_step == on_timeout
    assert d.run_at is None


@pytest.mark.parametrize("policy", ["wait", "fail_fast", "cancel_rest"])
def test_spawn_parks_with_its_children_and_join_policy(
    specs: tuple[InsertSpec, ...], policy: Any
) -> None:
    d = decide(snap(), Spawn(specs, "ship", on_failure=policy), {"s": 1})
    assert (d.kind, d.status, d.step, d.join_policy) == ("spawn", "awaiting", "ship", policy)
    assert d.children == specs
    assert d.state == {"s": 1}
    assert d.reset_attempt is True
    assert d.error is None
    assert not d.finished


def test_spawn_to_an_undeclared_step_is_invalid(specs: tuple[InsertSpec, ...]) -> None:
    with pytest.raises(InvalidOutcome, match="nowhere"):
        decide(snap(), Spawn(specs, "nowhere"), {})


@pytest.mark.parametrize(("limit", "ok"), [(None, True), (3, True), (4, True), (2, False)])
def test_spawn_respects_max_children(
    specs: tuple[InsertSpec, ...], limit: int | None, ok: bool
) -> None:
    s = snap(max_children=limit)
    if ok:
        assert len(decide(s, Spawn(specs, "ship"), {}).children) == len(specs)
    else:
        with pytest.raises(InvalidOutcome, match="limit"):
            decide(s, Spawn(specs, "ship"), {})


def test_spawn_as_compensation_carries_the_error(specs: tuple[InsertSpec, ...]) -> None:
    d = decide(snap(attempt=3), Failure({"e": 1}, 0.0, Spawn(specs, "compensate")), {})
    assert (d.kind, d.step, d.error, d.children) == ("spawn", "compensate", {"e": 1}, specs)


def test_await_timeout_without_on_timeout_resumes_at_then() -> None:
    d = decide(snap(), Await("paid", then="ship", timeout=30), {})
    assert d.delay == 30 and d.timeout_step is None and d.step == "ship"


@given(secs=seconds)
def test_sleep_seconds(secs: float) -> None:
    d = decide(snap(), Sleep(secs, then="ship"), {})
    assert (d.kind, d.status, d.step, d.delay, d.run_at) == (
        "sleep",
        ready(secs),
        "ship",
        secs,
        None,
    )


@given(when=aware)
def test_sleep_until(when: datetime) -> None:
    d = decide(snap(), Sleep(until=when, then="ship"), {})
    assert (d.kind, d.status, d.step, d.delay, d.run_at) == (
        "sleep",
        "scheduled",
        "ship",
        None,
        when,
    )


@given(data=st.data(), result=json_values, state=json_values)
def test_done_finishes_at_the_current_step_with_its_result(
    data: st.DataObject, result: Any, state: Any
) -> None:
    s = data.draw(snapshots())
    d = decide(s, Done(result), state)
    assert (d.kind, d.status, d.step) == ("done", "done", s.step)
    assert d.result == result
    assert d.error is None
    assert d.finished
    assert d.state is state


@given(reason=st.text(max_size=30))
def test_fail_and_cancel_record_their_reason(reason: str) -> None:
    failed = decide(snap(step="pay"), Fail(reason), {})
    assert (failed.kind, failed.status, failed.step) == ("fail", "failed", "pay")
    assert failed.error == {"type": "Fail", "message": reason}
    cancelled = decide(snap(step="pay"), Cancel(reason), {})
    assert (cancelled.kind, cancelled.status, cancelled.step) == ("cancel", "cancelled", "pay")
    assert cancelled.error == {"type": "Cancel", "message": reason}
    assert failed.finished and cancelled.finished
    assert failed.result is None and cancelled.result is None


def test_terminal_outcomes_need_no_declared_target() -> None:
    # the current step itself need not be checked for Done/Fail/Cancel
    s = snap(step="legacy", steps=("start",))
    for outcome in (Done(1), Fail("x"), Cancel("y")):
        assert decide(s, outcome, {}).finished


@pytest.mark.parametrize(
    "value",
    [None, 42, "ship", {"step": "ship"}, Next, Failure, ("ship",), KEEP],
    ids=repr,
)
def test_a_value_that_is_not_an_outcome_is_invalid(value: object) -> None:
    with pytest.raises(InvalidOutcome) as info:
        decide(snap(), value, {})  # type: ignore[arg-type]
    assert "shop.Checkout" in str(info.value)
    assert isinstance(info.value, DurableError)


@given(data=st.data(), state=json_values)
def test_decide_is_deterministic(data: st.DataObject, state: Any) -> None:
    s = data.draw(snapshots())
    outcome = data.draw(terminal_outcomes() | outcomes_to(declared_step(s)))
    assert decide(s, outcome, state) == decide(s, outcome, state)


# --- Transition.finished --------------------------------------------------------------


@pytest.mark.parametrize(
    "status", ["available", "scheduled", "awaiting", "done", "failed", "cancelled"]
)
def test_finished_is_true_exactly_for_terminal_statuses(status: str) -> None:
    d = Transition(1, None, 0, kind="next", status=status, step="a", state=None)  # type: ignore[arg-type]
    assert d.finished is (status in FINISHED_STATUSES)


@given(data=st.data(), state=json_values)
def test_finished_matches_kind(data: st.DataObject, state: Any) -> None:
    s = data.draw(snapshots())
    outcome = data.draw(
        terminal_outcomes()
        | outcomes_to(declared_step(s))
        | st.builds(Failure, errors, seconds, st.none())
    )
    d = decide(s, outcome, state)
    assert d.finished == (d.kind in {"done", "fail", "cancel", "error"})


def test_decisions_are_frozen() -> None:
    d = decide(snap(), Done(), {})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        d.status = "available"  # type: ignore[misc]


# --- the record: pack, route, history, fence ---------------------------------------

PACK = (11, 12)


@pytest.mark.parametrize(
    ("outcome", "consumed"),
    [
        (Next("pay"), PACK),
        (Done(), PACK),
        (Fail("no"), PACK),
        (Await("x", then="pay"), PACK),
        (RateLimited(1.0), ()),  # the same step runs again with the same pack
        (Failure({"type": "E"}, 1.0), ()),  # a retry
    ],
)
def test_a_transition_consumes_its_pack_unless_the_step_runs_again(
    outcome: Any, consumed: tuple[int, ...]
) -> None:
    assert decide(snap(awaited=PACK), outcome, None).consumed == consumed


def test_a_step_that_fails_for_good_keeps_its_pack_for_a_retry_from_outside() -> None:
    d = decide(snap(attempt=3, awaited=PACK), Failure({"type": "E"}, 1.0), None)
    assert (d.kind, d.consumed) == ("error", ())


def test_the_route_is_asked_for_the_step_made_runnable_and_never_for_a_finish() -> None:
    asked: list[str] = []

    def route(step: str) -> Route:
        asked.append(step)
        return Route(rate_key=f"bucket:{step}", rate_weight=2.0)

    assert decide(snap(), Next("ship"), None, route=route).route.rate_key == "bucket:ship"
    assert decide(snap(), RateLimited(1.0), None, route=route).route.rate_key == "bucket:start"
    assert decide(snap(), Done(), None, route=route).route is UNROUTED
    assert asked == ["ship", "start"]


@pytest.mark.parametrize(
    ("mode", "outcome", "recorded"),
    [
        ("none", Failure({"type": "E", "traceback": "t"}, 1.0), False),
        ("all", Next("pay"), True),
        ("errors", Next("pay"), False),
        ("errors", Fail("no"), True),
        ("errors", Failure({"type": "E", "traceback": "t"}, 1.0), True),
        ("errors", Failure({"type": "E"}, 1.0, Next("compensate")), False),
        ("errors", Failure({"type": "E", "traceback": "t"}, 1.0, Next("compensate")), True),
    ],
)
def test_history_records_what_the_mode_asks_for(mode: Any, outcome: Any, recorded: bool) -> None:
    assert decide(snap(attempt=3, history=mode), outcome, None).history is recorded


def test_the_record_carries_its_fence_and_where_it_came_from() -> None:
    token = uuid.uuid4()
    s = snap(lease_token=token, version=4, step="pay", attempt=2)
    d = decide(s, Next("ship"), '{"a":1}', seconds=0.0125)
    assert (d.instance_id, d.lease_token, d.version) == (7, token, 4)
    assert (d.fsm, d.from_step, d.attempt, d.duration_ms) == ("shop.Checkout", "pay", 2, 12.5)
    assert d.state == '{"a":1}'


# --- outcome_state ------------------------------------------------------------------


def test_outcome_state_keeps_current_when_state_is_omitted(
    specs: tuple[InsertSpec, ...],
) -> None:
    current = {"n": 1}
    now = datetime.now(UTC) + timedelta(hours=1)
    for outcome in (
        Spawn(specs, "a"),
        Next("a"),
        Await("s", then="a"),
        Sleep(1, then="a"),
        Sleep(until=now, then="a"),
        Done(3),
        Fail(),
        Cancel(),
    ):
        assert outcome_state(outcome, current) is current


@given(new=json_values)
def test_outcome_state_takes_an_explicit_state_even_none(new: Any) -> None:
    current = {"n": 1}
    for outcome in (
        Next("a", state=new),
        Await("s", then="a", state=new),
        Sleep(1, then="a", state=new),
    ):
        assert outcome_state(outcome, current) is new
