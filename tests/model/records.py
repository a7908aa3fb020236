"""The vocabulary of the model: the events an instance sees and the trail it leaves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from gen_durable.domain import definitions as registry


class Diverged(Exception):
    """The observed events cannot happen to the instance the model computes."""


class Unpredictable(Exception):
    """The workload left to timing something the model cannot decide (a workload bug)."""


@attrs.frozen
class Sig:
    id: int
    name: str
    key: str | None = None
    """The idempotency key it was sent with."""


@attrs.frozen
class Event:
    kind: str
    """``send``, ``crash``, ``timeout``, ``cancel``, ``cascade`` or ``retry``."""
    h: int
    status: str
    signals: tuple[Sig, ...] = ()


@attrs.frozen
class ChildOutcome:
    status: str
    result: Any = None
    error: str | None = None
    holds: bool = False
    """It parks until its parent has finished: still running at the parent's join."""


@attrs.frozen
class Child:
    """An element of ``ctx.children`` (status "unfinished" for a child still running)."""

    status: str
    result: Any = None
    error: dict[str, Any] | None = None


@attrs.frozen
class Commit:
    version: int
    attempt: int
    from_step: str
    kind: str
    to_step: str | None
    status: str


@attrs.frozen
class Run:
    version: int
    attempt: int
    step: str
    pack: tuple[int, ...]
    children: tuple[tuple[Any, ...], ...]
    end: str = "commit"
    """``commit`` (its transition landed), ``crash`` or ``abort`` (cancelled meanwhile)."""


@attrs.define
class Ctx:
    """What a step sees in the model (the fields of the engine's ``Context`` it uses)."""

    state: Any
    step: str
    attempt: int
    max_attempts: int
    version: int
    awaited: tuple[Sig, ...]
    children: tuple[Child, ...]
    prior: int
    """Transitions already committed at this version (retries, RateLimited, the failure)."""


@attrs.define
class Trail:
    commits: list[Commit] = attrs.Factory(list)
    runs: list[Run] = attrs.Factory(list)
    stored: dict[int, str] = attrs.Factory(dict)
    sends: list[tuple[int, bool]] = attrs.Factory(list)
    """Each signal sent, in order: (id, whether it repeated an idempotency key)."""
    consumed: dict[int, int] = attrs.Factory(dict)
    status: str = "available"
    step: str = ""
    version: int = 0
    state: Any = None
    result: Any = None
    error: str | None = None
    problem: str | None = None
    spawns: list[tuple[int, tuple[Any, ...]]] = attrs.Factory(list)


Children = Callable[[int, Sequence[Any]], Sequence[ChildOutcome | None]]


def lookup(name: str) -> type[Any]:
    """The registered class of a stored ``fsm`` name."""
    cls = registry.lookup(name)
    assert cls is not None, f"class {name} is not registered"
    return cls
