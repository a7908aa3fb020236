"""Plain value types shared by every layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""A value that ``json.dumps`` accepts: dict, list, str, int, float, bool or None."""


class Status(enum.StrEnum):
    """Lifecycle of an instance (the ``status`` column)."""

    SCHEDULED = "scheduled"
    """Runnable once ``run_at`` has passed (a delay, a backoff, a Sleep)."""
    AVAILABLE = "available"
    """Runnable now; the next free runner claims it."""
    BLOCKED = "blocked"
    """Runnable, but its concurrency key is at its limit: it waits for a free slot."""
    RUNNING = "running"
    """Claimed under a lease by a runner."""
    AWAITING = "awaiting"
    """Parked until a matching signal arrives (or its timeout passes)."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the terminal statuses."""
        return self in FINISHED


FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
"""The terminal statuses: the one source of the status vocabulary is :class:`Status`."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal as a step sees it in ``ctx.awaited``."""

    id: int
    name: str
    payload: JSON
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SignalInfo:
    """A signal as :func:`gen_durable.get` shows it."""

    id: int
    name: str
    payload: JSON
    created_at: datetime
    consumed_at: datetime | None
    idempotency_key: str | None


@dataclass(frozen=True, slots=True)
class SignalResult:
    """What :func:`gen_durable.signal` reports."""

    signal_id: int
    instance_id: int
    duplicate: bool = False
    started: bool = False


@dataclass(frozen=True, slots=True)
class Child:
    """A child instance as its parent's step sees it in ``ctx.children``."""

    id: int
    fsm: str
    """The child's class (registry name)."""
    status: Status
    result: JSON
    error: JSON

    @property
    def finished(self) -> bool:
        """True once the child is done, failed or cancelled."""
        return self.status.finished


@dataclass(frozen=True, slots=True)
class InstanceSnapshot:
    """A read-only view of an instance, as :func:`gen_durable.get` returns it."""

    id: int
    fsm: str
    status: Status
    step: str
    state: JSON
    queue: str
    priority: int
    attempt: int
    max_attempts: int
    version: int
    correlation_key: str | None
    run_at: datetime | None
    awaiting: tuple[str, ...] | None
    result: JSON
    error: JSON
    parent_id: int | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    signals: tuple[SignalInfo, ...] = ()
    children: tuple[int, ...] = ()
    """Ids of the instances this one spawned, oldest first."""

    @property
    def finished(self) -> bool:
        """True once the instance is done, failed or cancelled."""
        return self.status.finished
