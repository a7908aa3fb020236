"""Definitions (fsm.py): class options, the registry, insert specs (``new()``).

Every class here is defined inside its test, so its registry name
(``module.qualname``) is unique to that test. Steps, dispatch, jobs and typed state are
in test_definitions.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from _support.helpers import forget_classes
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain import routing
from gen_durable.domain.definitions import FSM, Job, lookup, registered, resolve
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.retry import Backoff
from gen_durable.errors import (
    DefinitionError,
    InvalidPayload,
    InvalidState,
    UnknownClass,
    ValidationError,
)

LATER = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="module")
def _forget_classes_defined_here() -> Iterator[None]:
    yield
    forget_classes(__name__)


# --- class options ------------------------------------------------------------------


def test_options_have_defaults_and_are_kept() -> None:
    class Plain(FSM):
        steps = ("a",)

    def slow(attempt: int) -> float:
        return 10.0 * attempt

    class Tuned(FSM):
        steps = ("a",)
        queue = "billing"
        priority = 9
        max_attempts = 1
        backoff = slow
        timeout = 2.5

    assert (Plain.queue, Plain.priority, Plain.max_attempts, Plain.timeout) == (
        "default",
        0,
        10,
        None,
    )
    assert isinstance(Plain.backoff, Backoff)
    spec = Tuned.new()
    assert (spec.queue, spec.priority, spec.max_attempts) == ("billing", 9, 1)
    assert Tuned.timeout == 2.5


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("priority", -1),
        ("priority", 10),
        ("priority", 1.0),
        ("priority", True),
        ("priority", "1"),
        ("max_attempts", 0),
        ("max_attempts", -3),
        ("max_attempts", 2.0),
        ("max_attempts", True),
        ("queue", ""),
        ("queue", 5),
        ("queue", None),
        ("timeout", 0),
        ("timeout", -1),
        ("timeout", math.nan),
        ("timeout", math.inf),
        ("timeout", "5"),
        ("backoff", 5),
        ("backoff", None),
    ],
    ids=repr,
)
def test_bad_options_are_definition_errors_and_do_not_register(option: str, value: Any) -> None:
    qualname = f"BadOption_{option}_{value!r}"
    before = registered()
    with pytest.raises(DefinitionError, match=option):
        type(qualname, (FSM,), {"steps": ("a",), option: value, "__module__": __name__})
    assert registered() == before


# --- registry -----------------------------------------------------------------------


def test_default_name_is_module_and_qualname() -> None:
    class Flow(FSM):
        steps = ("a",)

    assert Flow.name == f"{__name__}.{Flow.__qualname__}"
    assert lookup(Flow.name) is Flow
    assert resolve(Flow.name) is Flow
    assert resolve(Flow) is Flow


def test_explicit_name_is_the_registry_key() -> None:
    class Flow(FSM):
        name = "unit-tests/explicit-name"
        steps = ("a",)

    assert lookup("unit-tests/explicit-name") is Flow
    assert lookup(f"{__name__}.{Flow.__qualname__}") is None
    assert InsertSpec.build("unit-tests/explicit-name").cls is Flow


def test_a_subclass_gets_its_own_name_not_its_parents() -> None:
    class Parent(FSM):
        name = "unit-tests/parent"
        steps = ("a", "b")

    class Child(Parent):
        pass

    assert Child.name != Parent.name
    assert lookup(Child.name) is Child
    assert lookup("unit-tests/parent") is Parent
    assert Child._gd_steps == ("a", "b")


def test_name_clash_is_a_definition_error_and_keeps_the_first() -> None:
    class First(FSM):
        name = "unit-tests/clash"
        steps = ("a",)

    with pytest.raises(DefinitionError, match="taken"):

        class Second(FSM):
            name = "unit-tests/clash"
            steps = ("b",)

    assert lookup("unit-tests/clash") is First


def test_redefining_the_same_qualname_replaces_the_class() -> None:
    # what a module reload does: same module and qualname, a new class object
    made = [
        type(
            "Reloaded",
            (FSM,),
            {
                "steps": s,
                "name": "unit-tests/reloaded2",
                "__module__": __name__,
                "__qualname__": "Reloaded",
            },
        )
        for s in (("a",), ("a", "b"))
    ]
    assert lookup("unit-tests/reloaded2") is made[1]
    assert resolve(made[1]) is made[1]
    with pytest.raises(UnknownClass):
        resolve(made[0])


def test_registered_is_a_copy() -> None:
    class Flow(FSM):
        steps = ("a",)

    snapshot = registered()
    assert snapshot[Flow.name] is Flow
    snapshot.clear()
    assert lookup(Flow.name) is Flow


@pytest.mark.parametrize(
    "target",
    ["unit-tests/never-registered", 42, None, object, dict, Job, FSM],
    ids=repr,
)
def test_resolve_unknown_targets(target: Any) -> None:
    with pytest.raises(UnknownClass):
        resolve(target)
    assert issubclass(UnknownClass, ValidationError)


def test_lookup_unknown_name_is_none() -> None:
    assert lookup("unit-tests/nothing-here") is None


@pytest.mark.parametrize("bad", ["", 42], ids=repr)
def test_name_must_be_a_non_empty_string(bad: Any) -> None:
    with pytest.raises(DefinitionError):
        type(
            "Named",
            (FSM,),
            {
                "steps": ("a",),
                "name": bad,
                "__module__": __name__,
                "__qualname__": f"Named_{bad!r}",
            },
        )


# --- new(): insert specs --------------------------------------------------------------


@pytest.fixture(scope="module")
def flow() -> type[FSM]:
    class Flow(FSM):
        name = "unit-tests/insert-spec-flow"
        steps = ("start",)
        queue = "flows"
        priority = 3
        max_attempts = 4

    return Flow


@pytest.fixture(scope="module")
def job() -> type[Job]:
    class Work(Job):
        name = "unit-tests/insert-spec-job"

        def perform(self, args: Any) -> None:
            return None

    return Work


def test_new_uses_class_options_by_default(flow: type[FSM]) -> None:
    spec = flow.new(state={"a": 1})
    assert spec == InsertSpec(
        cls=flow,
        state={"a": 1},
        correlation_key=None,
        queue="flows",
        priority=3,
        delay=None,
        run_at=None,
        max_attempts=4,
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        spec.queue = "x"  # type: ignore[misc]


def test_new_overrides(flow: type[FSM]) -> None:
    spec = flow.new(correlation_key="order:1", queue="other", priority=0, delay=5, max_attempts=1)
    assert (spec.correlation_key, spec.queue, spec.priority, spec.delay, spec.max_attempts) == (
        "order:1",
        "other",
        0,
        5.0,
        1,
    )
    assert type(spec.delay) is float
    assert flow.new(run_at=LATER).run_at == LATER


def test_untyped_job_args(job: type[Job]) -> None:
    assert job.new().state == {}  # like an untyped FSM's state
    assert job.new(args=[1, "x"]).state == [1, "x"]


def test_build_by_registry_name(flow: type[FSM]) -> None:
    assert InsertSpec.build("unit-tests/insert-spec-flow", state={"x": 1}).cls is flow
    with pytest.raises(UnknownClass):
        InsertSpec.build("unit-tests/no-such-class")


def test_abstract_classes_cannot_be_inserted() -> None:
    class Base(FSM):
        abstract = True
        steps = ("a",)

    with pytest.raises(UnknownClass):
        Base.new()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"state": {}, "args": {}}, "not both"),
        ({"args": {}}, "FSM"),
        ({"correlation_key": ""}, "correlation_key"),
        ({"correlation_key": 5}, "correlation_key"),
        ({"queue": ""}, "queue"),
        ({"queue": 1}, "queue"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 2.0}, "priority"),
        ({"delay": -1}, "delay"),
        ({"delay": math.nan}, "delay"),
        ({"delay": math.inf}, "delay"),
        ({"delay": True}, "delay"),
        ({"delay": "5"}, "delay"),
        ({"delay": 1, "run_at": LATER}, "not both"),
        ({"run_at": datetime(2030, 1, 1)}, "run_at"),
        ({"run_at": "2030-01-01T00:00:00Z"}, "run_at"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
    ],
    ids=repr,
)
def test_new_rejects_bad_input_with_a_validation_error(
    flow: type[FSM], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        flow.new(**kwargs)


def test_a_job_takes_args_not_state(job: type[Job]) -> None:
    with pytest.raises(ValidationError, match="Job"):
        job.new(state={})


@pytest.mark.parametrize("state", [{"x": math.nan}, {"x": object()}, [math.inf]], ids=repr)
def test_new_rejects_non_json_state(flow: type[FSM], state: Any) -> None:
    with pytest.raises(InvalidPayload):
        flow.new(state=state)


def test_new_rejects_state_of_another_type() -> None:
    @attrs.define
    class Other:
        order: int

    class Checkout(FSM):
        steps = ("start",)

        @attrs.define
        class State:
            order: int

    with pytest.raises(InvalidState):
        Checkout.new(state=Other(1))
    with pytest.raises(InvalidState):
        Checkout.new(state={"order": "many"})


@given(priority=st.integers(min_value=-50, max_value=50))
def test_priority_is_accepted_exactly_from_0_to_9(flow: type[FSM], priority: int) -> None:
    if 0 <= priority <= 9:
        assert flow.new(priority=priority).priority == priority
    else:
        with pytest.raises(ValidationError):
            flow.new(priority=priority)


@given(attempts=st.integers(min_value=-5, max_value=10**6))
def test_max_attempts_is_accepted_from_1(flow: type[FSM], attempts: int) -> None:
    if attempts >= 1:
        assert flow.new(max_attempts=attempts).max_attempts == attempts
    else:
        with pytest.raises(ValidationError):
            flow.new(max_attempts=attempts)


def test_a_derived_concurrency_key_is_recomputed_and_a_given_one_stays() -> None:
    class Account(Job):
        @attrs.define
        class Args:
            account: int

        @staticmethod
        def concurrency_key(args: Any) -> str | None:
            if args.account < 0:
                raise ValueError("no such account")
            return f"account:{args.account}" if args.account else None

        def perform(self, args: Any) -> None:
            return None

    def move(held: str | None, before: int, after: int) -> tuple[bool, str | None]:
        return routing.next_concurrency_key(
            Account, held, lambda: {"account": before}, lambda: {"account": after}
        )

    assert move("account:1", 1, 2) == (True, "account:2")
    assert move("account:1", 1, 1) == (False, "account:1")
    assert move("account:1", 1, 0) == (True, None)  # the function may drop the key
    assert move(None, 0, 3) == (True, "account:3")
    assert move("pinned", 1, 2) == (False, None)  # given to insert(): never recomputed
    assert move("pinned", -1, 2) == (False, None)  # the function never gave it
    with pytest.raises(ValidationError, match="concurrency_key failed"):
        move("account:1", 1, -1)

    class Plain(Job):
        def perform(self, args: Any) -> None:
            return None

    def unread() -> Any:
        raise AssertionError("a class without a key function never reads the state")

    assert routing.next_concurrency_key(Plain, "given", unread, unread) == (False, None)
