"""The pure decision for Spawn, and the Spawn outcome's own validation (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain.decide import Failure, StepSnapshot, decide, outcome_state
from gen_durable.domain.definitions import Job
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.outcomes import KEEP, OUTCOME_TYPES, Next, Spawn
from gen_durable.errors import InvalidOutcome, UnknownClass, ValidationError


class Leaf(Job):
    name = "unit.spawn.Leaf"

    def perform(self, args: Any) -> Any:
        return args


def snap(**overrides: Any) -> StepSnapshot:
    fields: dict[str, Any] = {
        "instance_id": 1,
        "fsm": "unit.spawn.Parent",
        "step": "start",
        "steps": ("start", "join", "cleanup"),
        "attempt": 1,
        "max_attempts": 3,
    }
    fields.update(overrides)
    return StepSnapshot(**fields)


def specs(n: int) -> list[InsertSpec]:
    return [Leaf.new(args={"i": i}) for i in range(n)]


# --- the outcome -----------------------------------------------------------------------


def test_spawn_is_an_outcome_with_keep_and_wait_by_default() -> None:
    s = Spawn(specs(2), then="join")
    assert isinstance(s, OUTCOME_TYPES)
    assert s.state is KEEP
    assert s.on_failure == "wait"
    assert isinstance(s.children, tuple) and len(s.children) == 2
    assert Spawn(iter(specs(3)), "join").children == tuple(Spawn(specs(3), "join").children)


@pytest.mark.parametrize(
    ("children", "match"),
    [
        ([], "at least one child"),
        ((), "at least one child"),
        ([Leaf], "specs from Cls.new"),
        (["unit.spawn.Leaf"], "specs from Cls.new"),
        ("abc", "a list of"),
        (None, "a list of"),
    ],
)
def test_spawn_refuses_bad_children(children: Any, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Spawn(children, then="join")


def test_spawn_refuses_a_lone_spec_a_key_twice_a_bad_policy_and_a_bad_then() -> None:
    with pytest.raises(ValidationError, match="a list of"):
        Spawn(Leaf.new(), then="join")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="'k' appears twice"):
        Spawn([Leaf.new(correlation_key="k"), Leaf.new(correlation_key="k")], then="join")
    with pytest.raises(ValidationError, match="on_failure"):
        Spawn(specs(1), then="join", on_failure="never")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="then"):
        Spawn(specs(1), then="")
    assert isinstance(ValidationError("x"), ValueError)  # like the other outcomes' errors


def test_an_unknown_class_is_refused_when_the_spec_is_built() -> None:
    with pytest.raises(UnknownClass):
        InsertSpec.build("unit.spawn.Nowhere")


# --- decide --------------------------------------------------------------------------------


@given(
    n=st.integers(min_value=1, max_value=30),
    policy=st.sampled_from(["wait", "fail_fast", "cancel_rest"]),
    then=st.sampled_from(["start", "join", "cleanup"]),
)
def test_spawn_parks_at_then_with_its_children_and_policy(n: int, policy: Any, then: str) -> None:
    children = specs(n)
    d = decide(snap(), Spawn(children, then=then, on_failure=policy), {"s": 1})
    assert d.kind == "spawn"
    assert d.status == "awaiting"
    assert not d.finished
    assert d.step == then
    assert d.children == tuple(children)
    assert d.join_policy == policy
    assert d.await_names is None  # a join is not a signal await
    assert d.delay is None and d.run_at is None  # no timeout
    assert d.reset_attempt is True
    assert d.state == {"s": 1}


def test_spawn_naming_an_undeclared_step_is_invalid() -> None:
    with pytest.raises(InvalidOutcome, match="Spawn then names 'nowhere'"):
        decide(snap(), Spawn(specs(1), then="nowhere"), {})


def test_spawn_over_the_cap_is_invalid_and_at_the_cap_is_fine() -> None:
    assert decide(snap(max_children=3), Spawn(specs(3), then="join"), {}).kind == "spawn"
    with pytest.raises(InvalidOutcome, match="4 children exceeds the limit of 3"):
        decide(snap(max_children=3), Spawn(specs(4), then="join"), {})
    assert decide(snap(max_children=None), Spawn(specs(50), then="join"), {}).kind == "spawn"


def test_spawn_as_compensation_keeps_the_error() -> None:
    error = {"type": "RuntimeError", "message": "x"}
    d = decide(snap(attempt=3), Failure(error, 0.0, Spawn(specs(2), then="cleanup")), {})
    assert (d.kind, d.step, d.error, len(d.children)) == ("spawn", "cleanup", error, 2)


def test_spawn_with_attempts_left_after_a_failure_is_a_plain_retry() -> None:
    d = decide(snap(attempt=1), Failure({}, 1.0, Spawn(specs(2), then="join")), {})
    assert d.kind == "retry" and d.children == () and d.join_policy is None


def test_spawn_state_follows_keep() -> None:
    assert outcome_state(Spawn(specs(1), then="join"), {"now": 1}) == {"now": 1}
    assert outcome_state(Spawn(specs(1), then="join", state={"new": 2}), {"now": 1}) == {"new": 2}


def test_other_decisions_carry_no_children() -> None:
    nxt = decide(snap(), Next("join"), {})
    assert nxt.children == () and nxt.join_policy is None
