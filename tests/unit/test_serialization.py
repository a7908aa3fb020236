"""The one converter (serialization.py): JSON in storage, typed attrs values in step code."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable import serialization
from gen_durable.errors import InvalidPayload, InvalidState, ValidationError
from gen_durable.serialization import dumps, structure, unstructure, validate_state


@attrs.define
class Line:
    sku: str
    qty: int = 1


@attrs.define
class Order:
    order: int
    lines: list[Line] = attrs.Factory(list)
    note: str | None = None
    placed_at: datetime | None = None
    total: float = 0.0


storable = st.characters(codec="utf-8", exclude_characters="\x00")  # what jsonb holds
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(storable),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(storable, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
orders = st.builds(
    Order,
    order=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    lines=st.lists(st.builds(Line, sku=st.text(storable), qty=st.integers()), max_size=4),
    note=st.none() | st.text(storable),
    placed_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    total=st.floats(allow_nan=False, allow_infinity=False),
)


# --- structure ------------------------------------------------------------------------


@given(value=json_values)
def test_structure_without_a_type_returns_the_value_unchanged(value: Any) -> None:
    assert structure(value, None) == value


def test_structure_without_a_type_returns_a_copy_that_does_not_alias_the_input() -> None:
    # a failed attempt's in-place changes must not leak into its retry
    stored = {"items": [1, 2], "meta": {"n": 1}}
    loaded = structure(stored, None)
    loaded["items"].append(3)
    loaded["meta"]["n"] = 2
    loaded["new"] = True
    assert stored == {"items": [1, 2], "meta": {"n": 1}}


def test_structure_builds_nested_attrs_values() -> None:
    got = structure(
        {
            "order": 42,
            "lines": [{"sku": "a", "qty": 2}, {"sku": "b"}],
            "placed_at": "2030-01-02T03:04:05+00:00",
        },
        Order,
    )
    assert got == Order(
        order=42,
        lines=[Line("a", 2), Line("b", 1)],
        placed_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"order": 1, "surprise": True}, "surprise"),
        ({}, "order"),
        ({"order": "forty-two"}, "order"),
        ({"order": 1, "lines": [{"qty": 1}]}, "sku"),
        ({"order": 1, "lines": "abc"}, "lines"),
        (5, "Order"),
        (None, "Order"),
        ([1, 2], "Order"),
    ],
    ids=repr,
)
def test_structure_errors_are_invalid_state(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidState) as info:
        structure(value, Order)
    assert fragment in str(info.value)
    assert "Order" in str(info.value)
    assert isinstance(info.value, ValidationError)
    assert isinstance(info.value, ValueError)


def test_structure_names_what_it_structured() -> None:
    with pytest.raises(InvalidState, match=r"^args does not fit"):
        structure({}, Order, "args")


# --- unstructure ----------------------------------------------------------------------


@given(value=json_values)
def test_json_values_unstructure_to_themselves(value: Any) -> None:
    assert unstructure(value) == value


@given(value=orders)
def test_attrs_values_round_trip(value: Order) -> None:
    data = unstructure(value)
    assert json.loads(json.dumps(data)) == data
    assert structure(data, Order) == value


def test_unstructure_normalises_to_what_the_database_returns() -> None:
    class Tag(str):
        pass

    data = unstructure({"t": (1, 2), "s": Tag("x"), "n": [Tag("y")]})
    assert data == {"t": [1, 2], "s": "x", "n": ["y"]}
    assert type(data["t"]) is list
    assert type(data["s"]) is str
    assert type(data["n"][0]) is str


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        {"x": [1, math.nan]},
        Order(order=1, total=math.inf),
        object(),
        {"x": object()},
        {(1, 2): "tuple key"},
    ],
    ids=repr,
)
def test_non_json_values_are_invalid_payload(value: Any) -> None:
    with pytest.raises(InvalidPayload, match="not JSON-serialisable"):
        unstructure(value)


def test_circular_values_are_invalid_payload() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidPayload):
        unstructure(loop)


def test_unstructure_names_what_it_unstructured() -> None:
    with pytest.raises(InvalidPayload, match=r"^result is not"):
        unstructure(math.nan, "result")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="dict keys are stringified by json.dumps; colliding keys silently drop data",
)
def test_keys_that_collide_once_stringified_do_not_lose_data() -> None:
    value = {1: "one", "1": "uno"}
    try:
        data = unstructure(value)
    except InvalidPayload:
        return
    assert len(data) == len(value)


# --- dumps --------------------------------------------------------------------------------


@given(value=json_values)
def test_dumps_round_trips_json(value: Any) -> None:
    assert json.loads(dumps(value)) == value


def test_dumps_is_compact() -> None:
    assert dumps({"a": [1, 2], "b": None}) == '{"a":[1,2],"b":null}'


@pytest.mark.parametrize("value", [math.nan, {"x": math.inf}], ids=repr)
def test_dumps_rejects_nan(value: Any) -> None:
    with pytest.raises(ValueError):
        dumps(value)


# --- validate_state -----------------------------------------------------------------------


def test_validate_state_of_json_into_a_type_returns_normalised_json() -> None:
    data = validate_state({"order": 1, "lines": [{"sku": "a"}]}, Order)
    assert data == {
        "order": 1,
        "lines": [{"sku": "a", "qty": 1}],
        "note": None,
        "placed_at": None,
        "total": 0.0,
    }


@given(value=orders)
def test_validate_state_of_an_instance_equals_validate_state_of_its_json(value: Order) -> None:
    data = validate_state(value, Order)
    assert validate_state(data, Order) == data
    assert structure(data, Order) == value


def test_validate_state_rejects_what_does_not_fit() -> None:
    with pytest.raises(InvalidState, match="extra"):
        validate_state({"order": 1, "x": 2}, Order)
    with pytest.raises(InvalidState, match=r"^args "):
        validate_state({}, Order, "args")


def test_validate_state_rejects_nan_in_typed_and_untyped_values() -> None:
    with pytest.raises(InvalidPayload):
        validate_state({"order": 1, "total": math.nan}, Order)
    with pytest.raises(InvalidPayload):
        validate_state({"n": math.nan}, None)


@given(value=json_values)
def test_validate_state_without_a_type_checks_json_only(value: Any) -> None:
    assert validate_state(value, None) == value


def test_validated_state_always_loads_back() -> None:
    bad = Order(order="not a number")  # type: ignore[arg-type]
    try:
        data = validate_state(bad, Order)
    except InvalidState:
        return
    structure(data, Order)  # what the runtime does when it loads the instance


def test_there_is_one_converter_and_it_forbids_extra_keys() -> None:
    assert serialization.converter.forbid_extra_keys is True
