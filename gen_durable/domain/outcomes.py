"""What a step returns: the outcome contract of DESIGN.md section 2.

Every outcome is a frozen attrs class. ``state=`` omitted (:data:`KEEP`) means
"``ctx.state`` as it is now", so in-place changes to ``ctx.state`` are kept. Constructors
raise :class:`~gen_durable.errors.ValidationError` (a ``ValueError``) for an argument the
engine could not store, so a bad outcome fails in the step that built it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias

import attrs

from gen_durable.domain import serialization
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.errors import ValidationError
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
    if value is not None and not serialization.is_seconds(value):
        raise ValidationError(
            f"{attribute.name} must be a number of seconds from 0 to "
            f"{serialization.MAX_SECONDS:.0f}, got {value!r}"
        )


def _step_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    serialization.check_text(value, f"{attribute.name} (a step name)")


def _reason(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"{attribute.name} must be a string, got {type(value).__name__}")


@attrs.frozen
class Next:
    """Commit, then run ``step`` (after ``delay`` seconds, or at ``run_at``)."""

    step: str = attrs.field(validator=_step_name)
    state: Any = KEEP
    delay: float | None = attrs.field(default=None, validator=_non_negative)
    run_at: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.delay is not None and self.run_at is not None:
            raise ValidationError("give delay or run_at, not both")
        serialization.check_moment(self.run_at, "run_at")


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
            raise ValidationError("Await needs at least one signal name")
        for name in signals:
            serialization.check_signal_name(name, "signal names")
        _step_name(self, attrs.fields(Await).then, then)
        if on_timeout is not None:
            _step_name(self, attrs.fields(Await).on_timeout, on_timeout)
        if limit is not None and not serialization.is_count(limit):
            raise ValidationError(
                f"limit must be an int from 1 to {serialization.MAX_INT32}, got {limit!r}"
            )
        _non_negative(self, attrs.fields(Await).timeout, timeout)
        if on_timeout is not None and timeout is None:
            raise ValidationError("on_timeout needs a timeout")
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
            raise ValidationError("Sleep takes seconds or until=, exactly one")
        _non_negative(self, attrs.fields(Sleep).seconds, seconds)
        serialization.check_moment(until, "until")
        _step_name(self, attrs.fields(Sleep).then, then)
        self.__attrs_init__(seconds, until, then, state)


OnFailure: TypeAlias = Literal["wait", "fail_fast", "cancel_rest"]
ON_FAILURE: Final = ("wait", "fail_fast", "cancel_rest")


@attrs.frozen(init=False)
class Spawn:
    """Insert child instances with this step's commit; resume at ``then`` once.

    ``children`` are insert specs (``Cls.new(...)``), the same ones ``insert_all`` takes.
    They are inserted in the transaction that commits this step, so they exist if and
    only if that commit lands. The parent resumes at ``then`` exactly once, with the
    children in ``ctx.children`` (in this order), when ``on_failure`` says so:

    - ``"wait"`` (default): when every child has finished (done, failed or cancelled);
    - ``"fail_fast"``: as soon as one child fails, or when all have finished;
    - ``"cancel_rest"``: like ``fail_fast``, but the unfinished siblings (and their
      descendants) are cancelled first, in the same transaction.

    Raises :class:`~gen_durable.errors.ValidationError` (a ``ValueError``) for an empty
    list, an item that is not an insert spec, one correlation key used twice, or an
    unknown ``on_failure``.
    """

    children: tuple[InsertSpec, ...]
    then: str
    state: Any
    on_failure: OnFailure

    def __init__(
        self,
        children: Iterable[InsertSpec],
        then: str,
        *,
        state: Any = KEEP,
        on_failure: OnFailure = "wait",
    ) -> None:
        if isinstance(children, InsertSpec | str | bytes) or not isinstance(children, Iterable):
            raise ValidationError(f"Spawn takes a list of Cls.new(...) specs, got {children!r}")
        specs = tuple(children)
        if not specs:
            raise ValidationError("Spawn needs at least one child")
        for spec in specs:
            if not isinstance(spec, InsertSpec):
                raise ValidationError(f"Spawn takes specs from Cls.new(...), got {spec!r}")
        keys = [s.correlation_key for s in specs if s.correlation_key is not None]
        if len(keys) != len(set(keys)):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValidationError(f"correlation key {dup!r} appears twice in one Spawn")
        _step_name(self, attrs.fields(Spawn).then, then)
        if on_failure not in ON_FAILURE:
            raise ValidationError(
                f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}"
            )
        self.__attrs_init__(specs, then, state, on_failure)


@attrs.frozen
class Done:
    """Finished; ``result`` (JSON) is stored."""

    result: JSON = None


@attrs.frozen
class Fail:
    """Finished as failed, without retry."""

    reason: str = attrs.field(default="failed", validator=_reason)


@attrs.frozen
class Cancel:
    """Finished as cancelled."""

    reason: str = attrs.field(default="cancelled", validator=_reason)


@attrs.frozen
class RateLimited:
    """The remote side refused for now: re-run this step after ``retry_after`` seconds.

    No attempt is used, and the step's rate-limit bucket (its partition's) goes into
    debt until then, so every instance sharing it waits too.
    """

    retry_after: float = attrs.field(validator=_non_negative)


Outcome: TypeAlias = Next | Await | Sleep | Spawn | RateLimited | Done | Fail | Cancel
OUTCOME_TYPES: Final = (Next, Await, Sleep, Spawn, RateLimited, Done, Fail, Cancel)
