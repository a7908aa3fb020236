"""Token-bucket rate limits: the definitions and the pure bucket arithmetic.

The buckets themselves live in the database (``gd_rate_buckets``) and are taken from
atomically at claim time, so a limit holds across every runner process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from gen_durable.errors import DefinitionError, ValidationError


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefinitionError(f"RateLimit {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise DefinitionError(f"RateLimit {name} must be > 0, got {value!r}")
    return float(value)


@attrs.frozen(init=False)
class RateLimit:
    """``RateLimit(100, per=60)``: 100 tokens per 60 seconds, in a bucket of ``burst``.

    ``partition`` (a function of the state) gives each partition its own bucket;
    ``weight`` (a function of the state) lets a step cost more than one token.

    Args:
        rate: Tokens added to the bucket every ``per`` seconds (> 0).
        per: The period of ``rate``, in seconds (> 0).
        burst: The most tokens the bucket holds, so the most steps that may run back to
            back after a quiet spell; None: ``rate``.
        partition: A function of the state whose value names the instance's own bucket
            (one per value); None: one bucket for the class (or the step).
        weight: A function of the state giving the tokens one run of the step takes
            (> 0, at most ``burst``); None: 1.
    """

    rate: float
    per: float
    burst: float
    partition: Callable[[Any], object] | None
    weight: Callable[[Any], float] | None

    def __init__(
        self,
        rate: float,
        per: float = 1.0,
        *,
        burst: float | None = None,
        partition: Callable[[Any], object] | None = None,
        weight: Callable[[Any], float] | None = None,
    ) -> None:
        rate = _positive("rate", rate)
        per = _positive("per", per)
        burst = rate if burst is None else _positive("burst", burst)
        if not 0 < rate / per < math.inf:  # the refill arithmetic divides by it
            raise DefinitionError(f"RateLimit rate / per must be a usable rate, got {rate / per}")
        for name, fn in (("partition", partition), ("weight", weight)):
            if fn is not None and not callable(fn):
                raise DefinitionError(f"RateLimit {name} must be a function of the state")
        self.__attrs_init__(rate, per, burst, partition, weight)

    @property
    def per_second(self) -> float:
        """Tokens added to the bucket each second."""
        return self.rate / self.per

    def partition_of(self, state: Any) -> str:
        """The partition (bucket suffix) for ``state``; "" when unpartitioned."""
        if self.partition is None:
            return ""
        try:
            value = self.partition(state)
        except Exception as exc:
            raise ValidationError(f"rate limit partition failed: {exc!r}") from exc
        return "" if value is None else str(value)

    def weight_of(self, state: Any) -> float:
        """Tokens one run of the step takes for ``state`` (1 when unweighted)."""
        if self.weight is None:
            return 1.0
        try:
            value = float(self.weight(state))
        except Exception as exc:
            raise ValidationError(f"rate limit weight failed: {exc!r}") from exc
        if not math.isfinite(value) or value <= 0:
            raise ValidationError(f"rate limit weight must be > 0, got {value!r}")
        if value > self.burst:
            raise ValidationError(
                f"rate limit weight {value} exceeds the bucket's burst {self.burst}: it "
                "could never run"
            )
        return value


def refill(tokens: float, elapsed: float, limit: RateLimit) -> float:
    """The bucket's tokens after ``elapsed`` seconds of refilling, capped at ``burst``."""
    return min(limit.burst, tokens + max(0.0, elapsed) * limit.per_second)


def wait_for(tokens: float, weight: float, limit: RateLimit) -> float:
    """Seconds until a bucket holding ``tokens`` can give ``weight`` tokens."""
    return max(0.0, (weight - tokens) / limit.per_second)
