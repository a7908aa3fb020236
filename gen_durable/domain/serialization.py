"""The one cattrs converter: JSON in the database, typed attrs state in step code.

Never pickle: everything stored is JSON (jsonb). This is also where input is proven to
fit the database before anything is written: a payload within the payload limit and with
no character jsonb refuses, names and keys that a text column and its index can hold,
durations and integers the columns can represent.

Types are checked, never coerced (the hooks are in :mod:`gen_durable.domain.typecheck`): an
``int`` takes only an int, a ``str`` only a str, and so on, at any depth; untyped data may
only have text keys.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cattrs.errors import BaseValidationError
from cattrs.preconf.json import make_converter

from gen_durable.domain import misfit, typecheck
from gen_durable.errors import InvalidPayload, InvalidState, PayloadTooLarge, ValidationError
from gen_durable.types import JSON

converter = make_converter(forbid_extra_keys=True)
"""The converter that structures stored JSON into ``State``/``Args`` classes: it checks
types and never coerces them (see :mod:`gen_durable.domain.typecheck`)."""
typecheck.configure(converter)

DEFAULT_PAYLOAD_LIMIT = 1 << 20
"""The default payload limit: 1 MiB of compact UTF-8 JSON."""
MAX_TEXT_BYTES = 1024
"""The longest name or key (queue, correlation/concurrency/idempotency key, signal name),
in bytes of UTF-8: each is indexed, and a btree entry must fit in a third of a page."""
MAX_SECONDS = 3_155_760_000.0
"""The longest delay, timeout or window: 100 years, so that now + it is a valid time."""
MAX_INT32 = 2**31 - 1
"""The largest ``max_attempts``, ``concurrency_limit`` or ``Await`` ``limit``."""
MAX_ID = 2**63 - 1
"""The largest instance id (bigint)."""

_payload_limit = DEFAULT_PAYLOAD_LIMIT
# An escaped NUL: "\u0000" not itself preceded by an escaping backslash.
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


def set_payload_limit(nbytes: int) -> None:
    """Set the payload limit of this process: the most bytes a state, args, signal
    payload or result may take as compact UTF-8 JSON (default 1 MiB).

    A larger value raises :class:`~gen_durable.errors.PayloadTooLarge` before anything is
    written: from ``insert``, ``Cls.new``, ``signal``; in a step (a new state, a result,
    a Spawn child) it fails the attempt. Set it the same in every process that inserts,
    signals or runs steps.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
        raise ValidationError(f"the payload limit is a number of bytes >= 1, got {nbytes!r}")
    global _payload_limit
    _payload_limit = nbytes


def payload_limit() -> int:
    """The payload limit of this process, in bytes (see :func:`set_payload_limit`)."""
    return _payload_limit


def structure(
    value: JSON, type_: type[Any] | None, what: str = "state", *, owned: bool = False
) -> Any:
    """Turn stored JSON into the declared type (or, when untyped, a copy of it; ``owned``:
    the caller's own copy, returned as it is)."""
    if type_ is None:
        if owned or value is None or isinstance(value, str | int | float):
            return value  # immutable: nothing to copy
        # A copy: in-place changes by a failed attempt must not leak into its retry.
        return copy.deepcopy(value)
    try:
        return converter.structure(value, type_)
    except (BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        detail = "; ".join(misfit.problems(exc))
        # Not chained: the cause's text may quote the value, and a step's error keeps
        # its traceback.
        raise InvalidState(f"{what} does not fit {type_.__qualname__}: {detail}") from None


def unstructure(value: Any, what: str = "state") -> JSON:
    """Turn a state, args, payload or result into JSON-native data, or raise."""
    if value is None:  # most results: no round trip through the encoder needed
        return None
    return _encoded(_plain(value, what, None), what, None).data


_UNPARSED: Any = object()


class Encoded:
    """A value proven storable: the JSON text it encodes to, and its JSON-native data as
    the database will hand it back — parsed from the text only when asked for (a step's
    new state is stored as its text; most steps never need it as data)."""

    __slots__ = ("_data", "text")

    def __init__(self, text: str, data: JSON = _UNPARSED) -> None:
        self.text = text
        self._data = data

    @property
    def data(self) -> JSON:
        """The value as JSON-native data (dicts, lists, str, int, float, bool, None)."""
        if self._data is _UNPARSED:
            self._data = json.loads(self.text)
        return self._data


def _plain(value: Any, what: str, type_: type[Any] | None) -> Any:
    try:
        return converter.unstructure(value)
    except (TypeError, ValueError, AttributeError, RecursionError) as exc:
        if type_ is not None and isinstance(exc, AttributeError | ValueError):
            # A field holds what its type is not: a str where an attrs class is declared,
            # a mapping with keys 1 and "1" where it declares int keys.
            raise InvalidState(f"{what} does not fit {type_.__qualname__}: {exc}") from exc
        raise InvalidPayload(f"{what} is not JSON-serialisable: {exc}") from exc


def _encoded(data: Any, what: str, type_: type[Any] | None) -> Encoded:
    """``data`` as the database will hand it back, once proven storable."""
    try:
        # Encoding proves the value is JSON; parsing the text back (Encoded.data, when
        # asked for) normalises tuples, str subclasses and the like to what the database
        # will hand back.
        text = encode_json(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"{what} is not JSON-serialisable: {exc}") from exc
    # The encoder would turn 1 into "1" silently, and {1: a, "1": b} into one key.
    found = misfit.non_text_key(data)
    if found is not None:
        where = misfit.json_path(found[1:])
        problem = f"{where} has a key of type {misfit.type_of(found[0])}; keys are text"
        if type_ is None:
            raise InvalidPayload(f"{what} may only have text keys: {problem}")
        raise InvalidState(f"{what} does not fit {type_.__qualname__}: {problem}")
    # The messages name the problem, never the value: it may be large or private.
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidPayload(f"{what} may not hold a lone surrogate (it is not text)") from None
    if size > _payload_limit:
        raise PayloadTooLarge(what, size, _payload_limit)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidPayload(f"{what} may not hold a NUL character (PostgreSQL cannot store it)")
    return Encoded(text)


encode_json: Callable[[Any], str] = json.JSONEncoder(
    allow_nan=False, ensure_ascii=False, separators=(",", ":")
).encode
"""Compact JSON text of JSON-native data (no NaN); one encoder built once, not per call
as ``json.dumps`` with options does."""


def dumps(value: JSON) -> str:
    """Encode JSON-native data for a jsonb parameter.

    What :func:`unstructure` returned encodes as it is. What the engine records on its
    own — a failed step's message and traceback — may hold a character jsonb refuses (a
    NUL, a lone surrogate); it becomes U+FFFD, so that recording a failure cannot fail.
    """
    if value is None:
        return "null"
    text = encode_json(value)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
    if "\\u0000" in text:
        text = _NUL_ESCAPE.sub(r"\1\\ufffd", text)
    return text


def storable_text(text: str) -> str:
    """``text`` with what a PostgreSQL text column refuses (a NUL, a lone surrogate)
    replaced by U+FFFD: for text the engine records on its own, such as an error's."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub("\ufffd", text)
    return text.replace("\x00", "\ufffd")


def validate_state(value: Any, type_: type[Any] | None, what: str = "state") -> JSON:
    """Validate state/args against the declared type (strictly: see the module's
    docstring); return its JSON, or raise InvalidState / InvalidPayload."""
    return encode_state(value, type_, what).data


def encode_state(value: Any, type_: type[Any] | None, what: str = "state") -> Encoded:
    """:func:`validate_state`, keeping the JSON text too: a step's new state is encoded
    once, and that text is what its commit sends."""
    if type_ is None:
        if value is None:  # a job without args, an FSM without state
            return Encoded("null", None)
        return _encoded(_plain(value, what, None), what, None)
    if not isinstance(value, type_):
        value = structure(value, type_, what)
    encoded = _encoded(_plain(value, what, type_), what, type_)
    # attrs does not check the types of an instance's fields, and a hook may not be the
    # inverse of its counterpart: prove that what is stored loads back.
    structure(encoded.data, type_, what)
    return encoded


def check_text(value: object, what: str) -> str:
    """Return ``value`` if a name or key column can hold it, else raise ValidationError.

    That is a non-empty ``str`` of valid Unicode without NUL, at most
    :data:`MAX_TEXT_BYTES` bytes of UTF-8.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string, got {_brief(value)}")
    if "\x00" in value:
        raise ValidationError(f"{what} may not hold a NUL character (PostgreSQL cannot store it)")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} may not hold a lone surrogate (it is not text)") from None
    if size > MAX_TEXT_BYTES:
        raise ValidationError(f"{what} may be at most {MAX_TEXT_BYTES} bytes of UTF-8, got {size}")
    return value


NAME_SEPARATOR = "\x1f"
"""Joins signal names when a list of them travels as one text value: never in a name."""


def check_signal_name(value: object, what: str = "a signal name") -> str:
    """Return ``value`` if it can name a signal (see :func:`check_text`; no U+001F)."""
    name = check_text(value, what)
    if NAME_SEPARATOR in name:
        raise ValidationError(f"{what} may not hold U+001F (it separates names)")
    return name


def is_count(value: object) -> bool:
    """True for an int from 1 to :data:`MAX_INT32` (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= MAX_INT32


def is_seconds(value: object) -> bool:
    """True for a number of seconds from 0 to :data:`MAX_SECONDS` (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_SECONDS  # False for NaN; no float() of a huge int


_EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
_LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def is_moment(value: object) -> bool:
    """True for a timezone-aware datetime that reads back in any session time zone."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        return False
    try:
        return _EARLIEST <= value.astimezone(UTC) <= _LATEST
    except OverflowError:  # within hours of datetime.min or datetime.max
        return False


def check_moment(value: object, what: str) -> None:
    """Raise ValidationError unless ``value`` is None or a moment (:func:`is_moment`): a
    naive datetime would be read in the session's time zone, shifting the time."""
    if value is not None and not is_moment(value):
        raise ValidationError(
            f"{what} must be a timezone-aware datetime in years 1 to 9999, got {_brief(value)}"
        )


def _brief(value: object) -> str:
    return misfit.clip(repr(value), 80)
