"""``ctx``: what a running step sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol

from typing_extensions import TypeVar

from gen_durable.clock import monotonic
from gen_durable.types import Child, Signal

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

S = TypeVar("S", default=Any)
"""The type of a class's state (an FSM's ``State``, a Job's ``Args``); ``Any`` when not
given, so a bare ``Context`` is ``Context[Any]``."""


class CancelFlag(Protocol):
    """What ``ctx.cancelled`` reads (a :class:`threading.Event` is one)."""

    def is_set(self) -> bool: ...


class Flag:
    """A flag set once from another thread and read by a step: a plain attribute (reads
    and writes of one are atomic in CPython), with no lock or condition to build per
    step as a :class:`threading.Event` has."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        """Raise the flag."""
        self._set = True

    def is_set(self) -> bool:
        """Whether it was raised."""
        return self._set


class Context(Generic[S]):
    """The step's view of its instance; ``Context[CheckoutState]`` types ``ctx.state``.

    ``state`` is the typed state (mutate it in place or return a new one in the outcome);
    ``awaited`` holds the signals that woke the instance, in arrival order; ``children``
    the children of its latest ``Spawn`` in spawn order, as they were when this step was
    claimed; ``session`` is a SQLAlchemy Session opened on first use whose writes commit in
    the same transaction as the step's transition (exactly once), or roll back if the
    transition is fenced out.
    """

    __slots__ = (
        "_cancel",
        "_session",
        "_session_factory",
        "attempt",
        "awaited",
        "children",
        "correlation_key",
        "deadline",
        "fsm",
        "instance_id",
        "max_attempts",
        "parent_id",
        "state",
        "step",
        "version",
    )

    def __init__(
        self,
        *,
        instance_id: int,
        fsm: str,
        step: str,
        state: S,
        attempt: int,
        max_attempts: int,
        version: int,
        awaited: tuple[Signal, ...] = (),
        children: tuple[Child, ...] = (),
        correlation_key: str | None = None,
        parent_id: int | None = None,
        deadline: float | None = None,
        cancel_event: CancelFlag | None = None,
        session_factory: Callable[[], Session] | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.fsm = fsm
        self.step = step
        self.state = state
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.version = version
        self.awaited = awaited
        self.children = children
        self.correlation_key = correlation_key
        self.parent_id = parent_id
        self.deadline = deadline
        """The step's timeout as a ``time.monotonic()`` value, or None when it has none."""
        self._cancel = cancel_event if cancel_event is not None else Flag()
        self._session_factory = session_factory
        self._session: Session | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across re-runs of this step of this instance: pass it to external APIs."""
        return f"gd-{self.instance_id}-{self.version}"

    @property
    def cancelled(self) -> bool:
        """True once the instance was cancelled or the runtime lost its lease."""
        return self._cancel.is_set()

    def time_left(self) -> float | None:
        """Seconds until the step's timeout, or None when it has none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - monotonic())

    @property
    def session(self) -> Session:
        """A Session whose writes commit atomically with this step's transition."""
        if self._session is None:
            if self._session_factory is None:
                raise RuntimeError("this context has no database session")
            self._session = self._session_factory()
        return self._session

    @property
    def session_if_open(self) -> Session | None:
        """The session if the step opened one, else None (used by the runtime)."""
        return self._session
