"""Definitions (fsm.py): FSM and Job classes, their steps, dispatch and typed state.

Every class here is defined inside its test, so its registry name
(``module.qualname``) is unique to that test. Class options, the registry and insert
specs are in test_definitions_registry.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from _support.helpers import forget_classes

from gen_durable.domain.context import Context
from gen_durable.domain.definitions import FSM, Job, lookup, registered, resolve, step
from gen_durable.domain.outcomes import Done, Next
from gen_durable.errors import DefinitionError, InvalidState, UnknownClass


@pytest.fixture(autouse=True, scope="module")
def _forget_classes_defined_here() -> Iterator[None]:
    yield
    forget_classes(__name__)


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
