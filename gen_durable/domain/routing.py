"""Where an instance stands in line: its concurrency key and its rate-limit bucket.

Both are functions of the class's options and the instance's state, computed at insert
and again at every transition.
"""

from __future__ import annotations

from collections.abc import Callable

from gen_durable.domain import serialization
from gen_durable.domain.ratelimit import RateLimit
from gen_durable.domain.registry import Definable
from gen_durable.errors import ValidationError
from gen_durable.types import JSON

StateOf = Callable[[], JSON]
"""A state, read only when a function of the class needs it (a step's router parses the
stored or new state's text only for a class with a concurrency key or rate limit)."""


def concurrency_key_of(cls: Definable, state: JSON) -> str | None:
    """The concurrency key the class's ``concurrency_key`` function gives for ``state``."""
    function = cls.__dict__.get("concurrency_key") or getattr(cls, "concurrency_key", None)
    if function is None:
        return None
    typed = serialization.structure(state, cls._gd_state_type)
    try:
        key = function(typed)
    except Exception as exc:
        raise ValidationError(f"{cls.name}.concurrency_key failed: {exc!r}") from exc
    if key is None:
        return None
    return serialization.check_text(key, f"the key {cls.name}.concurrency_key returned")


def next_concurrency_key(
    cls: Definable, held: str | None, before: StateOf, after: StateOf
) -> tuple[bool, str | None]:
    """Whether a transition from state ``before`` to ``after`` moves the instance to another
    concurrency key, and to which: (changed, key).

    Only a key the class's ``concurrency_key`` function gave is recomputed, like a rate
    limit's partition. A key given to ``insert()`` — one the function does not give for
    ``before`` — stays for the instance's whole life. Raises :class:`ValidationError` when
    the function fails on ``after``.
    """
    if getattr(cls, "concurrency_key", None) is None:
        return False, None
    try:
        derived = concurrency_key_of(cls, before()) == held
    except ValidationError:  # a function that fails on the old state never gave its key
        derived = False
    if not derived:
        return False, None
    key = concurrency_key_of(cls, after())
    return key != held, key


def rate_limit_of(cls: Definable, step: str) -> RateLimit | None:
    """The rate limit step ``step`` of ``cls`` takes from, if any."""
    limit: RateLimit | None = cls.rate_limits.get(step) or cls.rate_limit
    return limit


def rate_bucket_of(cls: Definable, step: str, state: StateOf) -> tuple[str, float] | None:
    """(bucket key, weight) of step ``step`` for ``state``, or None when unlimited.

    A class-wide limit is one bucket for all steps; a per-step limit has its own. A
    partition adds a bucket per partition value.
    """
    limit = rate_limit_of(cls, step)
    if limit is None:
        return None
    typed = serialization.structure(state(), cls._gd_state_type)
    scope = step if step in cls.rate_limits else "*"
    key = f"{cls.name}:{scope}:{limit.partition_of(typed)}"
    return serialization.check_text(key, "the rate limit bucket key"), limit.weight_of(typed)
