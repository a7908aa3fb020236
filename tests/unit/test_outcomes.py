"""Outcomes (outcomes.py): the values a step returns, validated when built."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain import registry
from gen_durable.domain.definitions import Job
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.outcomes import (
    KEEP,
    OUTCOME_TYPES,
    Await,
    Cancel,
    Done,
    Fail,
    Next,
    RateLimited,
    Sleep,
    Spawn,
)
from gen_durable.domain.serialization import MAX_INT32, MAX_SECONDS
from gen_durable.errors import ValidationError

LATER = datetime(2030, 1, 1, tzinfo=UTC)
NAIVE = datetime(2030, 1, 1)
BAD_SECONDS = [-1, -0.001, math.nan, math.inf, -math.inf]
CHILD_NAME = "unit-tests/outcomes-child"


@pytest.fixture(scope="module")
def child() -> Iterator[type[Job]]:
    class Child(Job):
        name = CHILD_NAME

        def perform(self, args: Any) -> None:
            return None

    yield Child
    registry.forget(CHILD_NAME)


# --- KEEP ---------------------------------------------------------------------------


def test_keep_is_a_singleton_that_survives_copies() -> None:
    assert type(KEEP)() is KEEP
    assert copy.copy(KEEP) is KEEP
    assert copy.deepcopy(KEEP) is KEEP
    assert copy.deepcopy(Next("a")).state is KEEP
    assert pickle.loads(pickle.dumps(KEEP)) is KEEP
    assert repr(KEEP) == "KEEP"


def test_state_defaults_to_keep() -> None:
    assert Next("a").state is KEEP
    assert Await("s", then="a").state is KEEP
    assert Sleep(1, then="a").state is KEEP
    assert Sleep(until=LATER, then="a").state is KEEP


def test_terminal_defaults() -> None:
    assert Done().result is None
    assert Fail().reason == "failed"
    assert Cancel().reason == "cancelled"


# --- frozen, comparable -------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        (Next("a"), "step"),
        (Await("s", then="a"), "then"),
        (Sleep(1, then="a"), "then"),
        (Done(1), "result"),
        (Fail("x"), "reason"),
        (Cancel("x"), "reason"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_outcomes_are_frozen(outcome: object, field: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(outcome, field, "other")


def test_outcomes_compare_by_value() -> None:
    assert Next("a", state={"x": 1}, delay=2) == Next("a", state={"x": 1}, delay=2)
    assert Next("a", delay=2) != Next("a", delay=3)
    assert Await("s", "t", then="a") == Await("s", "t", then="a")
    assert Await("s", "t", then="a") != Await("t", "s", then="a")
    assert Sleep(5, then="a") == Sleep(5, then="a")
    assert Sleep(5, then="a") != Sleep(until=LATER, then="a")
    assert hash(Await("s", then="a")) == hash(Await("s", then="a"))


def test_outcome_types_lists_every_outcome(child: type[Job]) -> None:
    built = [
        Next("a"),
        Await("s", then="a"),
        Sleep(1, then="a"),
        Spawn([child.new()], "a"),
        RateLimited(5),
        Done(),
        Fail(),
        Cancel(),
    ]
    assert {type(o) for o in built} == set(OUTCOME_TYPES)
    assert len(OUTCOME_TYPES) == len(built)


# --- Next ---------------------------------------------------------------------------


@given(
    delay=st.none()
    | st.floats(min_value=0, max_value=MAX_SECONDS)
    | st.integers(0, int(MAX_SECONDS))
)
def test_next_accepts_non_negative_finite_delays(delay: float | None) -> None:
    assert Next("a", delay=delay).delay == delay


@pytest.mark.parametrize("delay", BAD_SECONDS)
def test_next_rejects_negative_or_non_finite_delays(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        Next("a", delay=delay)


def test_next_takes_delay_or_run_at_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        Next("a", delay=1, run_at=LATER)
    assert Next("a", run_at=LATER).run_at == LATER


def test_next_run_at_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Next("a", run_at=NAIVE)
    other_zone = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-5)))
    assert Next("a", run_at=other_zone).run_at == other_zone


# --- Await --------------------------------------------------------------------------


@given(names=st.lists(st.sampled_from(["a", "b", "c", "paid", "shipped"]), min_size=1))
def test_await_dedups_signal_names_keeping_first_occurrence_order(names: list[str]) -> None:
    signals = Await(*names, then="x").signals
    assert isinstance(signals, tuple)
    assert set(signals) == set(names)
    assert len(signals) == len(set(names))
    first_seen = sorted(set(names), key=names.index)
    assert list(signals) == first_seen


def test_await_needs_a_signal() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Await(then="x")


@pytest.mark.parametrize("name", ["", 3, None, b"paid"], ids=repr)
def test_await_signal_names_are_non_empty_strings(name: object) -> None:
    with pytest.raises(ValueError, match="signal names"):
        Await("ok", name, then="x")  # type: ignore[arg-type]


def test_await_then_is_required_and_keyword_only() -> None:
    with pytest.raises(TypeError):
        Await("s")  # type: ignore[call-arg]


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2"], ids=repr)
def test_await_limit_is_a_positive_int(limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        Await("s", then="x", limit=limit)  # type: ignore[arg-type]


@given(limit=st.integers(min_value=1, max_value=MAX_INT32))
def test_await_accepts_positive_limits(limit: int) -> None:
    assert Await("s", then="x", limit=limit).limit == limit


@pytest.mark.parametrize("timeout", BAD_SECONDS)
def test_await_timeout_is_finite_and_non_negative(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Await("s", then="x", timeout=timeout)


def test_await_on_timeout_needs_a_timeout() -> None:
    with pytest.raises(ValueError, match="on_timeout"):
        Await("s", then="x", on_timeout="late")
    a = Await("s", then="x", timeout=0, on_timeout="late")
    assert (a.timeout, a.on_timeout) == (0, "late")


def test_await_keeps_every_option() -> None:
    a = Await("p", "q", then="x", state={"k": 1}, all=True, limit=2, timeout=9.5, on_timeout="y")
    assert (a.signals, a.then, a.state, a.all, a.limit, a.timeout, a.on_timeout) == (
        ("p", "q"),
        "x",
        {"k": 1},
        True,
        2,
        9.5,
        "y",
    )
    assert Await("p", then="x").all is False


# --- Sleep --------------------------------------------------------------------------


def test_sleep_takes_seconds_or_until_exactly_one() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Sleep(then="x")
    with pytest.raises(ValueError, match="exactly one"):
        Sleep(1, until=LATER, then="x")
    s = Sleep(until=LATER, then="x")
    assert (s.seconds, s.until) == (None, LATER)
    assert (Sleep(0, then="x").seconds, Sleep(0, then="x").until) == (0, None)


@pytest.mark.parametrize("secs", BAD_SECONDS)
def test_sleep_seconds_are_finite_and_non_negative(secs: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        Sleep(secs, then="x")


def test_sleep_until_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        Sleep(until=NAIVE, then="x")


def test_sleep_then_is_required() -> None:
    with pytest.raises(TypeError):
        Sleep(5)  # type: ignore[call-arg]


# --- Spawn --------------------------------------------------------------------------


def test_spawn_keeps_its_children_in_order(child: type[Job]) -> None:
    specs = [child.new(args={"n": n}) for n in range(3)]
    spawn = Spawn(iter(specs), "joined")
    assert spawn.children == tuple(specs)
    assert isinstance(spawn.children, tuple)
    assert (spawn.then, spawn.state, spawn.on_failure) == ("joined", KEEP, "wait")


@pytest.mark.parametrize("policy", ["wait", "fail_fast", "cancel_rest"])
def test_spawn_join_policies(child: type[Job], policy: Any) -> None:
    assert Spawn([child.new()], "joined", on_failure=policy).on_failure == policy


def test_spawn_rejects_an_unknown_join_policy(child: type[Job]) -> None:
    with pytest.raises(ValidationError, match="on_failure"):
        Spawn([child.new()], "joined", on_failure="whenever")  # type: ignore[arg-type]


@pytest.mark.parametrize("then", ["", None, 3], ids=repr)
def test_spawn_then_must_name_a_step(child: type[Job], then: Any) -> None:
    with pytest.raises(ValidationError, match="then"):
        Spawn([child.new()], then)


def test_spawn_needs_a_list_of_specs(child: type[Job]) -> None:
    spec = child.new()
    for bad in ([], (), spec, "specs", 5, None, [spec, {"cls": "x"}], [spec, child]):
        with pytest.raises(ValidationError):
            Spawn(bad, "joined")  # type: ignore[arg-type]
    assert issubclass(ValidationError, ValueError)


def test_spawn_rejects_a_correlation_key_used_twice(child: type[Job]) -> None:
    with pytest.raises(ValidationError, match="k1"):
        Spawn(
            [child.new(correlation_key="k1"), child.new(), child.new(correlation_key="k1")],
            "joined",
        )
    keyless = Spawn([child.new(), child.new(), child.new(correlation_key="k1")], "joined")
    assert len(keyless.children) == 3


def test_spawn_is_frozen(child: type[Job]) -> None:
    spawn = Spawn([child.new()], "joined", state={"a": 1})
    assert spawn.state == {"a": 1}
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spawn.then = "other"  # type: ignore[misc]
    assert isinstance(spawn.children[0], InsertSpec)
