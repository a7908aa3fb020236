"""Reading the dashboard's query strings and forms into the client layer's values: every
malformed value becomes a :class:`BadInput` (a 400 page naming it), never a 500."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gen_durable.client.dashboard import InstanceFilter
from gen_durable.domain.serialization import MAX_ID
from gen_durable.errors import ValidationError

FILTER_FIELDS = {
    "class": "fsm",
    "status": "status",
    "queue": "queue",
    "step": "step",
    "key": "correlation_key",
    "worker": "lease_owner",
}
"""Query parameter -> :class:`InstanceFilter` field (the shareable URL's vocabulary)."""
TIME_FIELDS = {"from": "created_after", "to": "created_before"}


class BadInput(ValueError):
    """A query parameter or form field that cannot be used, with what was wrong."""


def instance_id(text: str, what: str = "instance id") -> int:
    """A positive 64-bit id written in digits."""
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise BadInput(f"{what} must be a positive 64-bit integer, got {text[:40]!r}")
    return int(text)


def target(text: str) -> int | str:
    """An instance id when the text is all digits, else a correlation key."""
    return instance_id(text) if text.isdigit() else text


def moment(text: str, what: str) -> datetime:
    """An ISO 8601 time (``2026-12-06T10:00``); without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(
            f"{what} must be an ISO 8601 time like 2026-12-06T10:00, got {text[:40]!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def instance_filter(args: Mapping[str, str]) -> InstanceFilter:
    """The filter a listing URL names (empty parameters are ignored)."""
    values: dict[str, Any] = {
        field: args[name] for name, field in FILTER_FIELDS.items() if args.get(name)
    }
    for name, field in TIME_FIELDS.items():
        if args.get(name):
            values[field] = moment(args[name], name)
    try:
        return InstanceFilter(**values)
    except ValidationError as exc:
        raise BadInput(str(exc)) from exc


def cursor(args: Mapping[str, str], name: str) -> int | None:
    """A pagination cursor (``before``/``after``), if given."""
    text = args.get(name)
    return None if not text else instance_id(text, name)


def page_size(args: Mapping[str, str]) -> int:
    """Rows per page: ``limit``, 1 to 500 (default 50)."""
    text = args.get("limit") or "50"
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise BadInput(f"limit must be a number from 1 to 500, got {text[:40]!r}")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_payload(text: str) -> Any:
    """A signal's payload: strict JSON (no NaN or Infinity); empty means null."""
    if not text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise BadInput(f"the payload is not valid JSON: {exc}") from exc
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - 1e999
        raise BadInput("the payload is not valid JSON: a number out of range")
    return value


def queue_limit(text: str) -> int | None:
    """A queue's global limit: 1 to 2^31-1, or empty / ``none`` for no limit."""
    text = text.strip()
    if text in ("", "none"):
        return None
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        raise BadInput(f"a limit is a number from 1 to 2147483647 or 'none', got {text[:40]!r}")
    return int(text)


def pretty(value: Any) -> str:
    """JSON for people: indented, every integer exact (rendered as text, never a float)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
