"""The wording of what did not fit a declared type: one line per problem, each naming its
path (``$.lines[0].sku``) and the value's type, never the value (it may be large or
private)."""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError


class Mismatch(TypeError):
    """A value of the wrong type: its message names types, never the value."""


def mismatch(expected: str, value: object) -> Mismatch:
    """A :class:`Mismatch` between what was ``expected`` and ``value``'s type."""
    return Mismatch(f"expected {expected}, got {type_of(value)}")


def type_of(value: object) -> str:
    """A short description of a value that does not show it: its type's name."""
    return "None" if value is None else type(value).__name__


def problems(exc: BaseException, path: str = "$", type_: Any = None) -> list[str]:
    """One line per problem of a structuring error, each naming its path as cattrs'
    ``transform_error`` does (``$.lines[0].sku``), and never quoting a value."""
    at = "" if path == "$" else f"{path}: "
    if isinstance(exc, ClassValidationError):
        noted, bare = exc.group_exceptions()
        missing = [note.name for sub, note in noted if isinstance(sub, KeyError)]
        found = [f"{at}missing required field(s): {', '.join(missing)}"] if missing else []
        for sub, note in noted:
            if not isinstance(sub, KeyError):
                found += problems(sub, f"{path}.{note.name}", note.type)
        return found + [line for sub in bare for line in problems(sub, path)]
    if isinstance(exc, IterableValidationError):
        found = []
        listed, bare = exc.group_exceptions()
        for sub, item in listed:
            where = path + json_path([item.index])[1:]
            if item.startswith("Structuring mapping key"):
                where += " (a key)"
            found += problems(sub, where, item.type)
        return found + [line for sub in bare for line in problems(sub, path)]
    if isinstance(exc, Mismatch):
        return [f"{at}{exc}"]
    if isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(clip(repr(k), 40) for k in sorted(exc.extra_fields)[:10])
        return [f"{at}extra field(s): {names}"]
    if isinstance(exc, KeyError):
        return [f"{at}a required field is missing"]
    if type_ is not None and isinstance(exc, TypeError | ValueError):
        return [f"{at}not a valid {type_name(type_)}"]
    # Raised by the class itself (an attrs validator, say): its author's words.
    return [f"{at}{type(exc).__name__}: {clip(str(exc), 120)}"]


_NESTED = (dict, list, tuple)


def non_text_key(node: Any) -> list[Any] | None:
    """The first dict key in ``node`` that is not text, followed by the path to its
    dict, innermost first; None when every key is text."""
    # One pass, in Python, over every payload stored: kept to the bare minimum.
    if isinstance(node, dict):
        for key, item in node.items():
            if not isinstance(key, str):
                return [key]
            if isinstance(item, _NESTED):
                found = non_text_key(item)
                if found is not None:
                    found.append(key)
                    return found
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            if isinstance(item, _NESTED):
                found = non_text_key(item)
                if found is not None:
                    found.append(index)
                    return found
    return None


def json_path(steps: list[Any]) -> str:
    """``$.a[0].b`` from the steps to a value, innermost first (keys are clipped)."""
    parts = ["$"]
    for step in reversed(steps):
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif isinstance(step, str) and step.isidentifier():
            parts.append(f".{clip(step, 40)}")
        else:
            parts.append(f"[{clip(repr(step), 40)}]")
    return "".join(parts)


def type_name(type_: Any) -> str:
    """How a declared type is named in a message (``int | None``)."""
    if get_origin(type_) in (Union, types.UnionType):
        return " | ".join(type_name(m) for m in get_args(type_))
    if type_ is type(None):
        return "None"
    return type_.__name__ if isinstance(type_, type) else repr(type_).replace("typing.", "")


def clip(text: str, size: int) -> str:
    """``text``, cut to ``size`` characters."""
    return text if len(text) <= size else text[: size - 3] + "..."
