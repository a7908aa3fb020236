"""What a step returns: the outcome contract of DESIGN.md section 2.

Every outcome is a frozen attrs class. ``state=`` omitted (:data:`KEEP`) means
"``ctx.state`` as it is now", so in-place changes to ``ctx.state`` are kept.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final, TypeAlias

import attrs

from gen_durable.types import JSON


class _Keep:
    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()
"""Sentinel default of ``state=``: keep ``ctx.state`` as it is now."""


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class Next:
    """Commit, then run ``step`` (after ``delay`` seconds, or at ``run_at``)."""

    step: str
    state: Any = KEEP
    delay: float | None = attrs.field(default=None, validator=_non_negative)
    run_at: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")


@attrs.frozen(init=False)
class Await:
    """Park until one (or, with ``all=True``, every) named signal is pending.

    The instance resumes at ``then`` with the matching pending signals in
    ``ctx.awaited`` (in arrival order, at most ``limit``). With ``timeout`` (seconds) it
    resumes at ``on_timeout`` (or at ``then`` when that is None) with an empty pack if no
    signal came first; exactly one of the two happens.
    """

    signals: tuple[str, ...]
    then: str
    state: Any
    all: bool
    limit: int | None
    timeout: float | None
    on_timeout: str | None

    def __init__(
        self,
        *signals: str,
        then: str,
        state: Any = KEEP,
        all: bool = False,
        limit: int | None = None,
        timeout: float | None = None,
        on_timeout: str | None = None,
    ) -> None:
        if not signals:
            raise ValueError("Await needs at least one signal name")
        for name in signals:
            if not isinstance(name, str) or not name:
                raise ValueError(f"signal names are non-empty strings, got {name!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError(f"timeout must be a finite number >= 0, got {timeout!r}")
        if on_timeout is not None and timeout is None:
            raise ValueError("on_timeout needs a timeout")
        self.__attrs_init__(
            tuple(dict.fromkeys(signals)), then, state, all, limit, timeout, on_timeout
        )


@attrs.frozen(init=False)
class Sleep:
    """A durable timer: resume at ``then`` after ``seconds`` or at ``until``."""

    seconds: float | None
    until: datetime | None
    then: str
    state: Any

    def __init__(
        self,
        seconds: float | None = None,
        *,
        until: datetime | None = None,
        then: str,
        state: Any = KEEP,
    ) -> None:
        if (seconds is None) == (until is None):
            raise ValueError("Sleep takes seconds or until=, exactly one")
        if seconds is not None:
            _non_negative(self, attrs.fields(Sleep).seconds, seconds)
        if until is not None and until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        self.__attrs_init__(seconds, until, then, state)


@attrs.frozen
class Done:
    """Finished; ``result`` (JSON) is stored."""

    result: JSON = None


@attrs.frozen
class Fail:
    """Finished as failed, without retry."""

    reason: str = "failed"


@attrs.frozen
class Cancel:
    """Finished as cancelled."""

    reason: str = "cancelled"


Outcome: TypeAlias = Next | Await | Sleep | Done | Fail | Cancel
OUTCOME_TYPES: Final = (Next, Await, Sleep, Done, Fail, Cancel)
