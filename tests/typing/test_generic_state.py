"""The class in ``FSM[...]``/``Job[...]`` is what the engine loads, when it is an attrs class."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from _support.helpers import forget_classes

from gen_durable import FSM, Context, Done, Job, Outcome
from gen_durable.domain.insert_spec import InsertSpec


@attrs.define
class OrderState:
    order: int


@pytest.fixture(autouse=True)
def _forget() -> Any:
    yield
    forget_classes(__name__)


def test_the_base_s_attrs_class_is_the_state_type_and_validates_inserts() -> None:
    class Typed(FSM[OrderState]):
        steps = ("start",)

        def step(self, name: str, ctx: Context[OrderState]) -> Outcome:
            return Done(ctx.state.order)

    class Child(Typed):  # inherits it
        steps = ("start",)

    assert Typed._gd_state_type is OrderState and Child._gd_state_type is OrderState
    spec = Typed.new(state={"order": 3})
    assert isinstance(spec, InsertSpec) and spec.state == {"order": 3}  # validated, as JSON
    with pytest.raises(ValueError, match="order"):
        Typed.new(state={"ordr": 3})


def test_a_nested_class_or_an_explicit_option_wins_and_json_types_stay_json() -> None:
    @attrs.define
    class Other:
        x: int

    class Nested(FSM[OrderState]):
        steps = ("start",)
        State = Other

    class Explicit(Job[OrderState]):
        args_type = Other

        def perform(self, args: Any) -> None: ...

    class Plain(Job[dict[str, Any]]):
        def perform(self, args: dict[str, Any]) -> None: ...

    class Bare(FSM):
        steps = ("start",)

    assert Nested._gd_state_type is Other and Explicit._gd_state_type is Other
    assert Plain._gd_state_type is None and Bare._gd_state_type is None


def test_a_job_s_args_come_from_its_base() -> None:
    class Charge(Job[OrderState]):
        def perform(self, args: OrderState) -> int:
            return args.order

    assert Charge._gd_state_type is OrderState
