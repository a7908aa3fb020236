"""The strict hooks of the one converter (:data:`gen_durable.serialization.converter`);
what did not fit is worded by :mod:`gen_durable.domain.misfit`.

Types are checked, never coerced. cattrs alone calls the declared type on the value, so
``int(1.7)``, ``int("12")``, ``str(5)``, ``bool("false")`` and a str read as a list of
characters all "fit". With these hooks an ``int`` takes only an int (not a bool, not a
float), a ``float`` an int or a float, ``bool`` and ``str`` only their own type, an attrs
class or a mapping only a mapping, a list, tuple or set only an array, at any depth. The
one reading of text as something else is a declared number or bool mapping key
(``dict[int, X]``), which JSON can only hold as text, and the converter's own encodings
(a datetime as ISO 8601 text).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import json
import math
import re
import threading
import types
from collections import Counter
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import date, datetime
from typing import Any, Literal, Union, get_args, get_origin

import attrs
from cattrs import Converter
from cattrs.cols import mapping_structure_factory, mapping_unstructure_factory

from gen_durable.domain.misfit import Mismatch, clip, mismatch, type_name, type_of


def configure(converter: Converter) -> None:
    """Make ``converter`` strict (see the module's docstring)."""
    converter.register_structure_hook(int, _int)
    converter.register_structure_hook(float, _float)
    converter.register_structure_hook(bool, _own_type)
    converter.register_structure_hook(str, _own_type)
    converter.register_structure_hook(datetime, _moment)
    converter.register_structure_hook(date, _moment)
    converter.register_structure_hook_func(_is_plain_literal, _literal)
    converter.register_structure_hook_factory(_is_plain_enum, _enum)
    converter.register_structure_hook_factory(_is_native_union, _native_union)
    converter.register_structure_hook_factory(_is_container, _checked_container)
    converter.register_unstructure_hook_factory(_is_text_keyed, _text_keyed)


def _int(value: Any, cl: type[Any]) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if cl is int else cl(value)  # cl: an int subclass such as an IntEnum
    raise mismatch(cl.__name__, value)


def _float(value: Any, cl: type[Any]) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return cl(value)
        except OverflowError:
            raise Mismatch(f"expected {cl.__name__}, got an int beyond its range") from None
    raise mismatch(cl.__name__, value)


def _own_type(value: Any, cl: type[Any]) -> Any:
    base = bool if issubclass(cl, bool) else str
    if isinstance(value, base):
        return value if cl is base else cl(value)  # cl: a subclass such as a str Enum
    raise mismatch(cl.__name__, value)


def _moment(value: Any, cl: type[date]) -> Any:
    # A datetime or date as the converter writes it (ISO 8601 text), or one already; a
    # date's text is not a datetime (nor a datetime, being a date subclass, a date).
    if type(value) is cl or (cl is datetime and isinstance(value, datetime)):
        return value
    if isinstance(value, str) and not (cl is datetime and _is_date_text(value)):
        with contextlib.suppress(ValueError):
            return cl.fromisoformat(value)
    got = "other text" if isinstance(value, str) else type_of(value)
    raise Mismatch(f"expected {cl.__name__} as ISO 8601 text, got {got}")


def _is_date_text(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_plain_literal(type_: Any) -> bool:
    return get_origin(type_) is Literal and all(
        v is None or type(v) in (int, str, bool, bytes) for v in get_args(type_)
    )


def _literal(value: Any, cl: Any) -> Any:
    # Literal[1] must refuse True and 1.0, which compare equal to 1.
    if any(type(value) is type(v) and value == v for v in get_args(cl)):
        return value
    allowed = ", ".join(repr(v) for v in get_args(cl))
    raise Mismatch(f"expected one of {clip(allowed, 80)}, got {type_of(value)}")


def _is_plain_enum(type_: Any) -> bool:
    """An Enum whose members are not ints, strs or floats themselves (those have the
    hooks of their base type)."""
    return (
        isinstance(type_, type)
        and issubclass(type_, enum.Enum)
        and not issubclass(type_, int | str | float)
    )


def _enum(type_: type[enum.Enum], _converter: Converter) -> Callable[[Any, Any], Any]:
    # Color(True) and Color(1.0) are Color.ONE when ONE = 1: Enum finds members by
    # equality. A value must have the type of its member's value (an int may stand for a
    # float one, as in a float field).
    members = [(member.value, type(member.value), member) for member in type_]
    allowed = clip(", ".join(repr(value) for value, _, _ in members), 80)
    flag = issubclass(type_, enum.Flag)

    def structure_enum(value: Any, cl: Any) -> Any:
        if isinstance(value, cl):
            return value
        kind = type(value)
        for member_value, member_kind, member in members:
            same = kind is member_kind or (kind is int and member_kind is float)
            if same and member_value == value:
                return member
        if flag and kind is int:  # a combination of flags
            try:
                return cl(value)
            except ValueError:
                pass
        raise Mismatch(f"expected one of {allowed}, got {type_of(value)}")

    return structure_enum


_NATIVE = (int, float, str, bool, type(None))


def _is_native_union(type_: Any) -> bool:
    """A union with a JSON scalar type in it; an Optional of one type is cattrs' own."""
    if get_origin(type_) not in (Union, types.UnionType):
        return False
    members = get_args(type_)
    if len(members) == 2 and type(None) in members:
        return False
    return any(m in _NATIVE or _is_plain_literal(m) for m in members)


def _native_union(type_: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    """cattrs' own union hook lets a bool through as an int (bool subclasses int)."""
    members = get_args(type_)
    kinds = {m for m in members if m in _NATIVE}
    literals = [m for m in members if m not in kinds and _is_plain_literal(m)]
    rest = [m for m in members if m not in kinds and m not in literals]
    spill: Any = Union[tuple(rest)] if rest else None  # noqa: UP007 (built from a tuple)
    name = type_name(type_)

    def structure_union(value: Any, _: Any) -> Any:
        if isinstance(value, bool):
            fits = bool in kinds
        elif isinstance(value, int):
            if int not in kinds and float in kinds:
                return _float(value, float)
            fits = int in kinds
        else:
            fits = type(value) in kinds or (isinstance(value, str) and str in kinds)
        if fits:
            return value
        for literal in literals:
            if any(type(value) is type(v) and value == v for v in get_args(literal)):
                return value
        try:
            if spill is not None:
                return converter.structure(value, spill)
        except Mismatch:
            pass  # the whole union is what was expected
        raise mismatch(name, value)

    return structure_union


def _container(type_: Any) -> tuple[tuple[type, ...], str] | None:
    """What a value of an attrs class or collection type must be an instance of, and
    how to say so."""
    origin = get_origin(type_) or type_
    if not isinstance(origin, type) or issubclass(origin, str | bytes | bytearray):
        return None
    if attrs.has(origin) or issubclass(origin, Mapping):
        return (dict, Mapping), "an object"  # dict first: an ABC's check is slow
    if issubclass(origin, Set):
        return (list, tuple, Set), "an array"
    if issubclass(origin, Sequence):
        return (list, tuple), "an array"
    return None


_local = threading.local()
_NO_TYPE = object()


def _is_container(type_: Any) -> bool:
    bypass = getattr(_local, "bypass", _NO_TYPE)
    if bypass is not _NO_TYPE and bypass == type_:
        _local.bypass = _NO_TYPE  # once: the nested types of a recursive class stay checked
        return False
    return _container(type_) is not None


def _checked_container(type_: Any, converter: Converter) -> Callable[[Any, Any], Any]:
    accepted, expected = _container(type_) or ((object,), "")
    origin = get_origin(type_) or type_
    base: Callable[[Any, Any], Any]
    if issubclass(origin, Mapping):
        # Built here rather than fetched: cattrs registers the mapping hooks it builds
        # ahead of every factory, which would unwrap this one the next time.
        base = mapping_structure_factory(
            type_,
            converter,
            dict if inspect.isabstract(origin) else origin,
            val_type=int if issubclass(origin, Counter) else attrs.NOTHING,
        )
    else:
        # The hook cattrs would use: ours is first in line and steps aside for this one
        # lookup (per thread: hooks are built lazily, on the first value of a type).
        _local.bypass = type_
        try:
            base = converter.get_structure_hook(type_, cache_result=False)
        finally:
            _local.bypass = _NO_TYPE
    read_key = _key_reader(type_)

    def structure_checked(value: Any, cl: Any) -> Any:
        if not isinstance(value, accepted):
            raise mismatch(expected, value)
        if read_key is not None:
            given: Mapping[Any, Any] = value  # type: ignore[assignment]  # checked above
            value = {read_key(k) if isinstance(k, str) else k: v for k, v in given.items()}
            if len(value) != len(given):
                raise Mismatch("got two keys that are one number once read")
        return base(value, cl)

    return structure_checked


_INT_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def _key_type(type_: Any) -> type | None:
    """The key type of a mapping type whose keys JSON holds as text, else None."""
    origin = get_origin(type_)
    args = get_args(type_)
    if not isinstance(origin, type) or not issubclass(origin, Mapping) or len(args) != 2:
        return None
    key = args[0]
    return key if isinstance(key, type) and issubclass(key, int | float) else None


def _key_reader(type_: Any) -> Callable[[str], Any] | None:
    """How a declared number or bool key is read from its JSON text. Text that does not
    spell one the way JSON writes it stays text, for the key's own hook to refuse."""
    key = _key_type(type_)
    if key is None:
        return None
    if issubclass(key, bool):
        return lambda text: {"true": True, "false": False}.get(text, text)
    if issubclass(key, int):
        return lambda text: int(text) if _INT_TEXT.fullmatch(text) else text
    return _float_key


def _float_key(text: str) -> Any:
    if _INT_TEXT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) and repr(number) == text else text


def _is_text_keyed(type_: Any) -> bool:
    return _key_type(type_) is not None


def _text_keyed(type_: Any, converter: Converter) -> Callable[[Any], Any]:
    base = mapping_unstructure_factory(type_, converter, unstructure_to=dict, key_handler=_key_text)

    def unstructure_text_keyed(value: Any) -> Any:
        data = base(value)
        if len(data) != len(value):  # 1 and "1": one would be lost
            raise ValueError("two keys of a mapping are one key once written as text")
        return data

    return unstructure_text_keyed


def _key_text(key: Any, _type: Any = None) -> Any:
    # json.dumps spells True "true" and 1.5 "1.5": the texts the key reader reads back.
    return key if isinstance(key, str) else json.dumps(key)
