"""Backoff between attempts of a failing step."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import TypeAlias

import attrs

from gen_durable.errors import DefinitionError


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter: ``min(max, base * factor**(attempt-1))`` ± jitter.

    ``jitter`` is a fraction: 0.1 spreads each delay uniformly over ±10 %.

    Args:
        base: Seconds to wait after the first failed attempt.
        factor: What each further failed attempt multiplies the delay by.
        max: The longest delay, in seconds.
        jitter: The fraction (0 to 1) of each delay it is spread by, at random, either way.
    """

    base: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1

    def __attrs_post_init__(self) -> None:
        for name in ("base", "factor", "max", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise DefinitionError(f"Backoff.{name} must be a finite number >= 0")
        if self.jitter > 1:
            raise DefinitionError("Backoff.jitter is a fraction between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        exponent = max(attempt - 1, 0)
        try:
            raw = self.base * self.factor**exponent
        except OverflowError:
            raw = self.max
        raw = min(self.max, raw)
        if self.jitter:
            spread = raw * self.jitter
            raw += (rng or random).uniform(-spread, spread)
        return max(0.0, raw)


BackoffSpec: TypeAlias = Backoff | Callable[[int], float]
"""A class's ``backoff`` option: a :class:`Backoff` or a callable attempt -> seconds."""


def backoff_delay(spec: BackoffSpec, attempt: int) -> float:
    """The delay a backoff option gives after failed attempt ``attempt``."""
    if isinstance(spec, Backoff):
        return spec.delay(attempt)
    value = float(spec(attempt))
    if not math.isfinite(value) or value < 0:
        raise DefinitionError(f"backoff callable returned {value!r}; need seconds >= 0")
    return value
