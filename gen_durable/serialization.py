"""The one cattrs converter: JSON in the database, typed attrs state in step code.

Never pickle: everything stored is JSON (jsonb).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from cattrs.errors import BaseValidationError
from cattrs.preconf.json import make_converter

from gen_durable.errors import InvalidPayload, InvalidState
from gen_durable.types import JSON

converter = make_converter(forbid_extra_keys=True)
"""The converter that structures stored JSON into ``State``/``Args`` classes."""


def structure(value: JSON, type_: type[Any] | None, what: str = "state") -> Any:
    """Turn stored JSON into the declared type (or return it as is when untyped)."""
    if type_ is None:
        # A copy: in-place changes by a failed attempt must not leak into its retry.
        return copy.deepcopy(value)
    try:
        return converter.structure(value, type_)
    except (BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        detail = _describe(exc)
        raise InvalidState(f"{what} does not fit {type_.__qualname__}: {detail}") from exc


def unstructure(value: Any, what: str = "state") -> JSON:
    """Turn a state, args, payload or result into JSON-native data, or raise."""
    try:
        data = converter.unstructure(value)
        # A round trip through the encoder proves the value is JSON and normalises
        # tuples, str subclasses and the like to what the database will hand back.
        result: JSON = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON-serialisable: {exc}") from exc
    return result


def dumps(value: JSON) -> str:
    """Encode JSON-native data for a jsonb parameter."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def validate_state(value: Any, type_: type[Any] | None, what: str = "state") -> JSON:
    """Validate user-supplied state/args against the declared type; return its JSON."""
    if type_ is None:
        return unstructure(value, what)
    if not isinstance(value, type_):
        value = structure(value, type_, what)
    data = unstructure(value, what)
    # An instance built by hand is not validated by attrs: prove that it loads back.
    structure(data, type_, what)
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseValidationError):
        from cattrs import transform_error

        return "; ".join(transform_error(exc))
    return f"{type(exc).__name__}: {exc}"
