"""Checks of a Runner's configuration: each bad value raises ConfigurationError naming it."""

from __future__ import annotations

import math
from collections.abc import Mapping

from gen_durable.domain import serialization
from gen_durable.errors import ConfigurationError, ValidationError


def check_queues(queues: Mapping[str, int]) -> dict[str, int]:
    """The queues a Runner serves (name -> concurrency), each name checked like insert's."""
    if not isinstance(queues, Mapping) or not queues:
        raise ConfigurationError("queues must be a non-empty mapping of queue name -> concurrency")
    out: dict[str, int] = {}
    for name, concurrency in queues.items():
        try:  # the rule insert applies: a name the queue column and its index can hold
            serialization.check_text(name, "queue")
        except ValidationError as exc:
            raise ConfigurationError(str(exc)) from None
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(
                f"queue {name!r}: concurrency must be an int >= 1, got {concurrency!r}"
            )
        out[name] = concurrency
    return out


def positive(**values: float) -> None:
    """Each value is a finite number > 0 (not a bool), or ConfigurationError names it."""
    for name, value in values.items():
        if not _finite(value) or not value > 0:
            raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")


def non_negative(**values: float) -> None:
    """Each value is a finite number >= 0 (not a bool), or ConfigurationError names it."""
    for name, value in values.items():
        if not _finite(value) or not value >= 0:
            raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")


def _finite(value: object) -> bool:
    # An infinite interval or grace is no setting: the service threads' waits overflow
    # (and the thread dies) on the first use.
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
