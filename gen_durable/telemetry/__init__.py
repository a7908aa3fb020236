"""Telemetry: subscribe to what gen_durable does (inserts, claims, steps, retries, ...).

>>> from gen_durable import telemetry
>>> detach = telemetry.attach(lambda event: print(event.name, dict(event.data)))
>>> detach()

Every event is also logged on the ``gen_durable.events`` logger, with its fields as
``extra=`` (structured logging), at the level :data:`LEVELS` gives it; turn that off with
:func:`detach_default_logger`. Adapters: :mod:`gen_durable.telemetry.prometheus`
(the ``prometheus`` extra) and :mod:`gen_durable.telemetry.otel` (the ``otel`` extra).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from gen_durable.events import (
    EVENTS,
    LEVELS,
    Event,
    Handler,
    attach_default_logger,
    detach_default_logger,
)
from gen_durable.events import attach as _attach

__all__ = [
    "EVENTS",
    "LEVELS",
    "Event",
    "Handler",
    "Recording",
    "attach",
    "attach_default_logger",
    "detach_default_logger",
    "record",
]


def attach(handler: Handler, events: Collection[str] | None = None) -> Callable[[], None]:
    """Call ``handler(event)`` for every event, or only for those named in ``events``.

    Returns a function that detaches the handler. Handlers run synchronously in the
    thread that emitted the event (a worker thread, the committer, a maintenance service,
    or the caller of ``insert``/``signal``), so keep them quick and thread-safe; an
    exception in a handler is logged and otherwise ignored. Event names are the keys of
    :data:`EVENTS`; an unknown name raises ``ValueError``.
    """
    return _attach(handler, events)


class Recording:
    """Events collected by :func:`record`, in the order they were emitted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        """Every event so far."""
        with self._lock:
            return list(self._events)

    def of(self, name: str) -> list[Event]:
        """The events of one name."""
        return [e for e in self.events if e.name == name]

    def names(self) -> list[str]:
        """The names of every event so far, in order."""
        return [e.name for e in self.events]

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self._events.clear()


@contextmanager
def record(events: Collection[str] | None = None) -> Iterator[Recording]:
    """Collect events (all, or those named) while the block runs; handy in tests."""
    recording = Recording()
    detach = attach(recording, events)
    try:
        yield recording
    finally:
        detach()
