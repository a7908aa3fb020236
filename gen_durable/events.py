"""The telemetry event bus: every layer emits here, handlers subscribe here.

Standard library only, so that the client API and the runtime may emit without
depending on the telemetry adapters. The public facade is :mod:`gen_durable.telemetry`.

:func:`emit` costs a call and two checks when no handler is attached and the default
logger is off for the event's level (as it is for the hot events unless DEBUG logging is
on for ``gen_durable.events``). Handlers run synchronously in the emitting thread (a
worker, the committer, a maintenance service or the caller of the client API); a handler
that raises is logged and never disturbs the emitter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("gen_durable.telemetry")
event_log = logging.getLogger("gen_durable.events")
"""Where the default handler logs every event, with its fields as ``extra=``."""

EVENTS: Mapping[str, str] = {
    "insert": "instances were inserted (client API, signal-with-start, cron)",
    "signal": "a signal was stored for an instance",
    "claim": "a runner claimed a batch of instances",
    "step.start": "a step is about to run",
    "step.stop": "a step ran and its transition was committed (or fenced out)",
    "step.exception": "a step raised (or returned something that is not an outcome)",
    "retry": "a failed step will run again after a backoff",
    "reaper.rescue": "expired leases were returned (or failed when out of attempts)",
    "release": "claims still running at shutdown were given back, to run again elsewhere",
    "gc": "finished instances past retention were deleted",
    "leadership": "this runner took or lost leadership",
}
"""Every event name, with what it means."""

LEVELS: Mapping[str, int] = {
    "insert": logging.DEBUG,
    "signal": logging.DEBUG,
    "claim": logging.DEBUG,
    "step.start": logging.DEBUG,
    "step.stop": logging.DEBUG,
    "step.exception": logging.INFO,
    "retry": logging.INFO,
    "reaper.rescue": logging.WARNING,
    "release": logging.WARNING,
    "gc": logging.INFO,
    "leadership": logging.INFO,
}
"""The level at which the default handler logs each event."""


@dataclass(frozen=True, slots=True)
class Event:
    """One telemetry event: its name, its fields and when it happened (``time.time()``)."""

    name: str
    data: Mapping[str, Any]
    time: float = field(default_factory=time.time)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


Handler = Callable[[Event], None]

_lock = threading.Lock()
_handlers: tuple[Handler, ...] = ()


def emit(name: str, /, **data: Any) -> None:
    """Hand an event to every attached handler and to the default logger.

    With no handler attached and the logger disabled for the event's level (the default
    for the hot events), this costs a call, a tuple check and a level check.
    """
    handlers = _handlers
    logging_it = _log_events and event_log.isEnabledFor(LEVELS.get(name, logging.DEBUG))
    if not handlers and not logging_it:
        return
    event = Event(name, data)
    for handler in (log_event, *handlers) if logging_it else handlers:
        try:
            handler(event)
        except Exception:
            log.warning("telemetry handler %r failed on %s", handler, name, exc_info=True)


def active(name: str) -> bool:
    """True when an event of this name would reach a handler or the log (build it then)."""
    return bool(_handlers) or (
        _log_events and event_log.isEnabledFor(LEVELS.get(name, logging.DEBUG))
    )


def attach(handler: Handler, events: Collection[str] | None = None) -> Callable[[], None]:
    """Call ``handler(event)`` for every event (or only those named in ``events``).

    Returns a function that detaches it again (calling it twice is harmless).
    """
    if not callable(handler):
        raise TypeError(f"a telemetry handler is callable, got {handler!r}")
    target: Handler = handler
    if events is not None:
        wanted = frozenset(events)
        unknown = sorted(wanted - EVENTS.keys())
        if unknown:
            raise ValueError(f"unknown telemetry events {unknown}; known: {sorted(EVENTS)}")

        def target(event: Event) -> None:
            if event.name in wanted:
                handler(event)

    global _handlers
    with _lock:
        _handlers = (*_handlers, target)

    def detach() -> None:
        global _handlers
        with _lock:
            _handlers = tuple(h for h in _handlers if h is not target)

    return detach


def log_event(event: Event) -> None:
    """Log an event on ``gen_durable.events`` with structured fields (the default logger).

    The message is readable (``step.stop instance_id=12 fsm='shop.Checkout' ...``) and
    ``extra=`` carries ``event`` (the name) and every field of the event, for a JSON
    formatter to pick up; a field whose name a log record already uses gets a ``gd_``
    prefix.
    """
    level = LEVELS.get(event.name, logging.DEBUG)
    if not event_log.isEnabledFor(level):
        return
    text = " ".join(f"{key}={_short(value)}" for key, value in event.data.items())
    extra = {("gd_" + k if k in _RESERVED else k): v for k, v in event.data.items()}
    error = event.data.get("exception")
    event_log.log(
        level,
        "%s %s",
        event.name,
        text,
        extra={"event": event.name, **extra},
        exc_info=error if isinstance(error, BaseException) else None,
    )


_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


_log_events = True


def attach_default_logger() -> None:
    """Log every event through :mod:`logging` (the default)."""
    global _log_events
    _log_events = True


def detach_default_logger() -> None:
    """Stop logging events (attached handlers keep receiving them)."""
    global _log_events
    _log_events = False
