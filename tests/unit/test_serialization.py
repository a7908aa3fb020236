"""The one converter (serialization.py): JSON in storage, typed attrs values in step code."""

from __future__ import annotations

import enum
import json
import math
from datetime import UTC, date, datetime
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain import serialization
from gen_durable.domain.serialization import dumps, structure, unstructure, validate_state
from gen_durable.errors import InvalidPayload, InvalidState, ValidationError


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


def test_keys_that_collide_once_stringified_do_not_lose_data() -> None:
    value = {1: "one", "1": "uno"}
    try:
        data = unstructure(value)
    except InvalidPayload:
        return
    assert len(data) == len(value)


@pytest.mark.parametrize(
    ("value", "where"),
    [({1: "one"}, "$ "), ({"a": [{"b": {True: 1}}]}, "$.a[0].b "), ([{None: 1}], "$[0] ")],
    ids=repr,
)
def test_untyped_data_with_keys_that_are_not_text_is_invalid_payload(
    value: Any, where: str
) -> None:
    with pytest.raises(InvalidPayload, match="may only have text keys") as info:
        validate_state(value, None)
    assert where in str(info.value)


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


# --- types are checked, never coerced (issue 14, items 3 and 5) --------------------------


class Color(enum.IntEnum):
    RED = 1


class Shade(enum.Enum):  # a plain Enum: Enum itself finds members by equality
    LIGHT = 1
    DARK = "dark"
    HALF = 0.5


class Access(enum.Flag):
    READ = 1
    WRITE = 2


@attrs.define
class Strict:
    n: int = 0
    x: float = 0.0
    flag: bool = False
    label: str = ""
    maybe: int | None = None
    ns: list[int] = attrs.Factory(list)
    pair: tuple[int, str] = (0, "")
    by_name: dict[str, int] = attrs.Factory(dict)
    by_id: dict[int, str] = attrs.Factory(dict)
    by_weight: dict[float, bool] = attrs.Factory(dict)
    line: Line | None = None
    either: int | str = 0
    kind: Literal[1, "one"] = 1
    color: Color = Color.RED
    shade: Shade = Shade.LIGHT
    access: Access = Access.READ
    when: datetime | None = None
    day: date | None = None
    anything: Any = None


COERCED = [  # what the converter turned into something else before
    ({"n": 1.7}, "$.n: expected int, got float"),
    ({"n": "12"}, "$.n: expected int, got str"),
    ({"n": True}, "$.n: expected int, got bool"),
    ({"n": 3.0}, "$.n: expected int, got float"),
    ({"x": True}, "$.x: expected float, got bool"),
    ({"x": "1.5"}, "$.x: expected float, got str"),
    ({"label": 5}, "$.label: expected str, got int"),
    ({"label": None}, "$.label: expected str, got None"),
    ({"flag": "false"}, "$.flag: expected bool, got str"),
    ({"flag": 1}, "$.flag: expected bool, got int"),
    ({"maybe": "3"}, "$.maybe: expected int, got str"),
    ({"ns": [1, 2.5]}, "$.ns[1]: expected int, got float"),
    ({"ns": "12"}, "$.ns: expected an array, got str"),
    ({"ns": {"1": 1}}, "$.ns: expected an array, got dict"),
    ({"pair": [1, 2]}, "$.pair[1]: expected str, got int"),
    ({"by_name": {"a": "1"}}, "$.by_name.a: expected int, got str"),
    ({"by_id": {"1": 5}}, "$.by_id[1]: expected str, got int"),
    ({"by_id": {"x": "a"}}, "$.by_id.x (a key): expected int, got str"),
    ({"by_id": {"01": "a"}}, "$.by_id['01'] (a key): expected int, got str"),
    ({"line": {"sku": 7}}, "$.line.sku: expected str, got int"),
    ({"line": "sku"}, "$.line: expected an object, got str"),
    ({"either": True}, "$.either: expected int | str, got bool"),
    ({"either": 1.5}, "$.either: expected int | str, got float"),
    ({"kind": True}, "$.kind: expected one of 1, 'one', got bool"),
    ({"color": True}, "$.color: expected Color, got bool"),
    ({"color": "1"}, "$.color: expected Color, got str"),
    ({"shade": True}, "$.shade: expected one of 1, 'dark', 0.5, got bool"),
    ({"shade": 1.0}, "$.shade: expected one of 1, 'dark', 0.5, got float"),
    ({"shade": "1"}, "$.shade: expected one of 1, 'dark', 0.5, got str"),
    ({"shade": "DARK"}, "$.shade: expected one of 1, 'dark', 0.5, got str"),
    ({"access": True}, "$.access: expected one of 1, 2, got bool"),
    ({"access": 4}, "$.access: expected one of 1, 2, got int"),
    ({"when": "2024-05-01"}, "$.when: expected datetime as ISO 8601 text, got other text"),
    ({"when": 1714521600}, "$.when: expected datetime as ISO 8601 text, got int"),
    ({"day": "2024-05-01T00:00:00"}, "$.day: expected date as ISO 8601 text, got other text"),
]


@pytest.mark.parametrize(("value", "message"), COERCED, ids=repr)
def test_a_value_of_the_wrong_type_is_refused_naming_its_field(value: Any, message: str) -> None:
    with pytest.raises(InvalidState) as info:
        validate_state(value, Strict)
    assert str(info.value) == f"state does not fit Strict: {message}"


@pytest.mark.parametrize(("value", "message"), COERCED, ids=repr)
def test_an_instance_built_with_a_wrong_type_is_refused_too(value: Any, message: str) -> None:
    built = Strict(**value)  # attrs does not check types; step code may do the same
    with pytest.raises(InvalidState, match=r"^state does not fit Strict: "):
        validate_state(built, Strict)


def test_values_of_the_declared_types_are_taken_as_they_are() -> None:
    value: dict[str, Any] = {"n": 2**80, "x": 3, "flag": True, "ns": [-(2**70)], "kind": "one"}
    value |= {"by_id": {1: "a", "-2": "b"}, "by_weight": {0.5: True, 2: False}, "color": 1}
    value |= {"shade": "dark", "access": 3, "day": "2024-05-01"}
    value |= {"when": datetime(2024, 5, 1, 12, tzinfo=UTC)}  # one already: no text needed
    value |= {"line": {"sku": "s"}, "either": "e", "anything": {"k": [1.5, None]}}
    data = validate_state(value, Strict)
    assert data["by_id"] == {"1": "a", "-2": "b"}  # JSON keys are text
    assert data["by_weight"] == {"0.5": True, "2.0": False}
    loaded = structure(json.loads(json.dumps(data)), Strict)
    assert loaded.n == 2**80 and loaded.ns == [-(2**70)]
    assert (loaded.x, type(loaded.x)) == (3.0, float)
    assert loaded.by_id == {1: "a", -2: "b"}
    assert loaded.by_weight == {0.5: True, 2.0: False}
    assert loaded.color is Color.RED
    assert loaded.shade is Shade.DARK and loaded.access is Access.READ | Access.WRITE
    assert loaded.when == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert loaded.day == date(2024, 5, 1)
    assert structure({"shade": 1}, Strict).shade is Shade.LIGHT
    assert structure({"shade": 0.5}, Strict).shade is Shade.HALF
    assert validate_state(loaded, Strict) == data


def test_keys_of_the_wrong_type_or_that_collide_are_refused() -> None:
    colliding: Any = {1: "a", "1": "b"}
    int_keyed: Any = {1: 2}
    for bad, message in [
        ({"by_id": colliding}, r"\$\.by_id: got two keys that are one number"),
        (Strict(by_id=colliding), "two keys of a mapping are one key once written as text"),
        (Strict(by_name=int_keyed), r"\$\.by_name has a key of type int; keys are text"),
    ]:
        with pytest.raises(InvalidState, match=message):
            validate_state(bad, Strict)


def test_missing_required_fields_are_named() -> None:
    with pytest.raises(InvalidState) as info:
        structure({}, Line, "args")
    assert str(info.value) == "args does not fit Line: missing required field(s): sku"
    with pytest.raises(InvalidState, match=r"^args does not fit Line: expected an object"):
        structure(None, Line, "args")
    with pytest.raises(InvalidState, match=r"\$\.lines\[0\]: missing required field\(s\): sku$"):
        validate_state({"order": 1, "lines": [{"qty": 2}]}, Order)


def test_messages_describe_a_value_by_its_type_never_quote_it() -> None:
    secret = "hunter2-" + "x" * 10_000
    for bad in ({"n": secret}, {"either": [secret]}, {"line": {"sku": "s", secret: 1}}):
        with pytest.raises(InvalidState) as info:
            validate_state(bad, Strict)
        assert len(str(info.value)) < 120  # an extra field's name is shown, clipped
        assert "hunter2" not in str(info.value) or "extra field" in str(info.value)
        # A step's error keeps its traceback: the cause, which may quote it, is not chained.
        assert info.value.__cause__ is None and info.value.__suppress_context__


@given(n=st.integers(min_value=-(2**200), max_value=2**200))
def test_ints_of_any_size_round_trip(n: int) -> None:
    assert json.loads(dumps(validate_state({"n": n}, None))) == {"n": n}
    assert structure(json.loads(dumps(validate_state({"n": n}, Strict))), Strict).n == n
