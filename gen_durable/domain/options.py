"""Class and insert options shared by definitions and insert specs: defaults and checks."""

from __future__ import annotations

from typing import Literal

from gen_durable.domain import serialization
from gen_durable.errors import ValidationError

DEFAULT_QUEUE = "default"
MAX_PRIORITY = 9
"""The largest ``priority``: priorities run from 0 (claimed first) to 9."""

HistoryMode = Literal["all", "errors", "none"]
HISTORY_MODES: tuple[HistoryMode, ...] = ("all", "errors", "none")
"""What the transition history records: every transition, failing ones, or nothing."""


def check_limit(value: object) -> None:
    """A concurrency limit: an int from 1 to the largest int32."""
    if not serialization.is_count(value):
        raise ValidationError(
            f"concurrency_limit must be an int from 1 to {serialization.MAX_INT32}, got {value!r}"
        )


def check_priority(value: object) -> None:
    """A priority: an int from 0 to :data:`MAX_PRIORITY`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise ValidationError(f"priority must be an int from 0 to {MAX_PRIORITY}, got {value!r}")


def check_attempts(value: object) -> None:
    """A number of attempts: an int from 1 to the largest int32."""
    if not serialization.is_count(value):
        raise ValidationError(
            f"max_attempts must be an int from 1 to {serialization.MAX_INT32}, got {value!r}"
        )
