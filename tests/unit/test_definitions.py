"""Definitions (fsm.py): FSM and Job classes, options, typed state, registry, insert specs.

Every class here is defined inside its test, so its registry name
(``module.qualname``) is unique to that test.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable import fsm
from gen_durable.context import Context
from gen_durable.errors import (
    DefinitionError,
    InvalidPayload,
    InvalidState,
    UnknownClass,
    ValidationError,
)
from gen_durable.fsm import FSM, InsertSpec, Job, lookup, registered, resolve, step
from gen_durable.outcomes import Done, Next
from gen_durable.retry import Backoff

LATER = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="module")
def _forget_classes_defined_here() -> Iterator[None]:
    yield
    for name, cls in registered().items():
        if cls.__module__ == __name__:
            fsm._registry.pop(name, None)


def make_ctx(state: Any = None, step_name: str = "start") -> Context:
    return Context(
        instance_id=1,
        fsm="x",
        step=step_name,
        state=state,
        attempt=1,
        max_attempts=3,
        version=0,
    )


# --- steps --------------------------------------------------------------------------


def test_declared_steps_first_is_initial() -> None:
    class Checkout(FSM):
        steps = ("start", "pay", "ship")

    assert Checkout._gd_steps == ("start", "pay", "ship")
    assert Checkout._gd_initial == "start"
    assert Checkout._gd_kind == "fsm"


def test_initial_option_picks_another_step() -> None:
    class Checkout(FSM):
        steps = ("start", "pay", "ship")
        initial = "pay"

    assert Checkout._gd_initial == "pay"


def test_steps_may_be_a_list() -> None:
    class Checkout(FSM):
        steps = ["a", "b"]  # type: ignore[assignment]

    assert Checkout._gd_steps == ("a", "b")


def test_initial_must_be_a_step() -> None:
    with pytest.raises(DefinitionError, match="initial"):

        class Checkout(FSM):
            steps = ("start", "ship")
            initial = "pay"


def test_a_class_without_steps_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="no steps"):

        class Empty(FSM):
            pass


@pytest.mark.parametrize(
    "steps",
    [("a", "b", "a"), ("a", ""), ("a", 3), ("a", None)],
    ids=repr,
)
def test_step_names_are_unique_non_empty_strings(steps: tuple[Any, ...]) -> None:
    before = registered()
    with pytest.raises(DefinitionError, match="step names"):
        type("Bad", (FSM,), {"steps": steps, "__module__": __name__})
    assert registered() == before


def test_steps_given_as_a_string_are_rejected() -> None:
    with pytest.raises(DefinitionError):

        class Shipping(FSM):
            steps = "ship"  # type: ignore[assignment]  # i.e. steps = ("ship")


def test_marked_methods_are_the_steps_in_definition_order() -> None:
    class Onboarding(FSM):
        @step
        def welcome(self, ctx: Context) -> Next:
            return Next("verify")

        def helper(self) -> None:
            pass

        @step
        def verify(self, ctx: Context) -> Done:
            return Done()

    assert Onboarding._gd_steps == ("welcome", "verify")
    assert Onboarding._gd_initial == "welcome"


def test_marked_methods_must_be_declared_when_steps_are_declared() -> None:
    with pytest.raises(DefinitionError, match="verify"):

        class Onboarding(FSM):
            steps = ("welcome",)

            @step
            def verify(self, ctx: Context) -> Done:
                return Done()


def test_declared_steps_win_over_marked_order() -> None:
    class Onboarding(FSM):
        steps = ("verify", "welcome", "extra")

        @step
        def welcome(self, ctx: Context) -> Done:
            return Done()

        @step
        def verify(self, ctx: Context) -> Done:
            return Done()

    assert Onboarding._gd_steps == ("verify", "welcome", "extra")


def test_steps_are_inherited_from_an_abstract_base() -> None:
    class Base(FSM):
        abstract = True

        @step
        def first(self, ctx: Context) -> Next:
            return Next("second")

        @step
        def second(self, ctx: Context) -> Done:
            return Done()

    class Concrete(Base):
        @step
        def third(self, ctx: Context) -> Done:
            return Done()

    assert Concrete._gd_steps == ("first", "second", "third")
    assert lookup(Concrete.name) is Concrete
    with pytest.raises(UnknownClass):
        resolve(Base)


def test_marking_an_override_makes_it_a_step() -> None:
    class Base(FSM):
        abstract = True

        def ship(self, ctx: Context) -> Done:
            return Done()

    class Concrete(Base):
        @step
        def start(self, ctx: Context) -> Next:
            return Next("ship")

        @step
        def ship(self, ctx: Context) -> Done:
            return Done()

    assert set(Concrete._gd_steps) == {"start", "ship"}


# --- dispatch -----------------------------------------------------------------------


def test_default_dispatcher_calls_the_method_of_the_step() -> None:
    class Flow(FSM):
        steps = ("start", "finish")

        def start(self, ctx: Context) -> Next:
            return Next("finish", state={"seen": ctx.state})

        def finish(self, ctx: Context) -> Done:
            return Done(ctx.step)

    assert Flow().step("start", make_ctx(7)) == Next("finish", state={"seen": 7})
    assert Flow().step("finish", make_ctx(step_name="finish")) == Done("finish")


def test_default_dispatcher_without_a_method_is_a_definition_error() -> None:
    class Flow(FSM):
        steps = ("start", "missing")

        def start(self, ctx: Context) -> Done:
            return Done()

    with pytest.raises(DefinitionError, match="missing"):
        Flow().step("missing", make_ctx())


def test_a_custom_dispatcher_needs_no_methods() -> None:
    class Flow(FSM):
        steps = ("a", "b")

        def step(self, name: str, ctx: Context) -> Any:
            return Done(name)

    assert Flow().step("b", make_ctx()) == Done("b")


def test_on_error_defaults_to_failing() -> None:
    class Flow(FSM):
        steps = ("a",)

    assert Flow().on_error("a", RuntimeError("x"), make_ctx()) is None


# --- jobs ---------------------------------------------------------------------------


def test_job_with_args_only() -> None:
    class Mail(Job):
        def perform(self, args: Any) -> Any:
            return {"sent": args}

    assert Mail._gd_kind == "job"
    assert Mail._gd_steps == ("perform",)
    assert Mail._gd_initial == "perform"
    assert Mail._gd_perform_takes_ctx is False
    assert Mail().step("perform", make_ctx({"to": "a"})) == {"sent": {"to": "a"}}


def test_job_with_args_and_ctx() -> None:
    class Mail(Job):
        def perform(self, args: Any, ctx: Context) -> Any:
            return (args, ctx.instance_id)

    ctx = make_ctx("hello")
    assert Mail._gd_perform_takes_ctx is True
    assert Mail().step("perform", ctx) == ("hello", 1)


def test_job_without_perform_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="perform"):

        class Mail(Job):
            pass


@pytest.mark.parametrize("arity", [0, 3])
def test_job_perform_signature_is_checked(arity: int) -> None:
    params = ", ".join(f"a{i}" for i in range(arity))
    namespace: dict[str, Any] = {}
    exec(f"def perform(self{', ' if params else ''}{params}): return None", namespace)
    with pytest.raises(DefinitionError, match="perform"):
        type("Mail", (Job,), {"perform": namespace["perform"], "__module__": __name__})


def test_typed_job_args() -> None:
    class Mail(Job):
        @attrs.define
        class Args:
            to: str

        def perform(self, args: Any) -> None:
            return None

    assert Mail._gd_state_type is Mail.Args
    assert Mail.new(args={"to": "a@b"}).state == {"to": "a@b"}
    with pytest.raises(InvalidState):
        Mail.new(args={"to": "a@b", "cc": "x"})
    with pytest.raises(InvalidState):
        Mail.new()  # a typed job needs its args


def test_args_type_option() -> None:
    @attrs.define
    class Payload:
        n: int

    class Mail(Job):
        args_type = Payload

        def perform(self, args: Any) -> None:
            return None

    assert Mail._gd_state_type is Payload
    assert Mail.new(args=Payload(3)).state == {"n": 3}


# --- typed state --------------------------------------------------------------------


def test_nested_state_class_is_the_state_type() -> None:
    class Checkout(FSM):
        steps = ("start",)

        @attrs.define
        class State:
            order: int
            paid: bool = False

    assert Checkout._gd_state_type is Checkout.State
    assert Checkout.new(state={"order": 4}).state == {"order": 4, "paid": False}
    assert Checkout.new(state=Checkout.State(5, True)).state == {"order": 5, "paid": True}


def test_state_type_option_wins_over_a_nested_state() -> None:
    @attrs.define
    class Other:
        x: int

    class Checkout(FSM):
        steps = ("start",)
        state_type = Other

        @attrs.define
        class State:
            order: int

    assert Checkout._gd_state_type is Other


def test_nested_state_must_be_an_attrs_class() -> None:
    with pytest.raises(DefinitionError, match="attrs"):

        class Checkout(FSM):
            steps = ("start",)

            class State:
                order: int


def test_untyped_fsm_state_is_plain_json() -> None:
    class Flow(FSM):
        steps = ("start",)

    assert Flow._gd_state_type is None
    assert Flow.new().state == {}
    assert Flow.new(state={"a": [1, 2]}).state == {"a": [1, 2]}
    assert Flow.new(state=(1, 2)).state == [1, 2]


def test_typed_fsm_without_state_uses_defaults_or_fails() -> None:
    class WithDefaults(FSM):
        steps = ("start",)

        @attrs.define
        class State:
            n: int = 0

    class Required(FSM):
        steps = ("start",)

        @attrs.define
        class State:
            n: int

    assert WithDefaults.new().state == {"n": 0}
    with pytest.raises(InvalidState, match="n"):
        Required.new()


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
        return fsm.next_concurrency_key(Account, held, {"account": before}, {"account": after})

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

    assert fsm.next_concurrency_key(Plain, "given", None, None) == (False, None)
