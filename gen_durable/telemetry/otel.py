"""OpenTelemetry tracing: a span per step, continuing the trace that inserted the instance
(the ``otel`` extra).

>>> from gen_durable.telemetry import otel
>>> tracing = otel.instrument()          # spans go to the global TracerProvider

Once instrumented, ``insert``, ``insert_all`` and signal-with-start store the W3C trace
context of the current span with each instance they create, and a ``Spawn`` stores the
spawning step's span with each child. Each step then runs inside a span named
``gen_durable.step <fsm>.<step>`` (kind ``CONSUMER``) whose parent is that stored context;
with none stored, the step's span starts a trace of its own. The span is current while the
step's code runs, so the spans that code makes (HTTP clients, database drivers) nest under
it; it ends once the step's transition committed, or was fenced out. Spans are per
process: the runner that ran a step exports its span.

Until :func:`instrument` is called, nothing is captured and no span is made: the client
API and the runtime pay one None check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "gen_durable.telemetry.otel needs opentelemetry-api: pip install 'gen_durable[otel]'"
    ) from exc

from gen_durable import __version__, tracing
from gen_durable.events import Event
from gen_durable.telemetry import attach

__all__ = ["SPAN_ATTRIBUTES", "StepTracing", "instrument"]

SPAN_ATTRIBUTES = {
    "instance_id": "gen_durable.instance_id",
    "fsm": "gen_durable.fsm",
    "step": "gen_durable.step",
    "queue": "gen_durable.queue",
    "attempt": "gen_durable.attempt",
    "kind": "gen_durable.outcome",
    "next_step": "gen_durable.next_step",
    "committed": "gen_durable.committed",
}
"""Event field -> the attribute of the step span that carries it."""

_STARTED = ("instance_id", "fsm", "step", "queue", "attempt")
_STOPPED = ("kind", "next_step", "committed")
_W3C = TraceContextTextMapPropagator()


class StepTracing:
    """The tracer the client API and the runtime call (:class:`gen_durable.tracing.Tracer`),
    and the telemetry handler that starts, annotates and ends the step spans.

    A span starts at ``step.start`` (on the worker thread), records the exception of a
    ``step.exception`` (its status becomes ERROR) and ends at ``step.stop`` (on the
    committer's thread when the step did not use ``ctx.session``), with explicit times.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("gen_durable", __version__, tracer_provider)
        self._lock = threading.Lock()
        self._open: dict[int, tuple[int, Span]] = {}
        """Instance id -> (attempt, span) of the steps started and not yet stopped."""
        self._detach: Callable[[], None] = lambda: None

    def detach(self) -> None:
        """Turn tracing off again: no more trace contexts stored, no more step spans."""
        self._detach()
        if tracing.tracer is self:
            tracing.tracer = None
        with self._lock:
            self._open.clear()

    # -- gen_durable.tracing.Tracer -----------------------------------------------------------

    def current(self) -> str | None:
        """The trace context of the current span, as stored with an instance."""
        return _to_text(None)

    def of_step(self, instance_id: int) -> str | None:
        """The trace context of the instance's step span, while its step runs here."""
        span = self._span(instance_id)
        return None if span is None else _to_text(trace.set_span_in_context(span, Context()))

    def step_scope(self, instance_id: int) -> AbstractContextManager[object]:
        """Make the instance's step span current while the step's code runs."""
        span = self._span(instance_id)
        if span is None:
            return nullcontext()
        # The executor turns what the step raises into a step.exception event.
        return trace.use_span(span, record_exception=False, set_status_on_exception=False)

    def _span(self, instance_id: int) -> Span | None:
        with self._lock:
            entry = self._open.get(instance_id)
        return None if entry is None else entry[1]

    # -- the telemetry handler ------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Start, annotate or end a step span."""
        if event.name == "step.start":
            self._start(event)
        elif event.name == "step.exception":
            self._exception(event)
        elif event.name == "step.stop":
            self._stop(event)

    def _start(self, event: Event) -> None:
        span = self._tracer.start_span(
            f"gen_durable.step {event['fsm']}.{event['step']}",
            context=_from_text(event.data.get("trace_context")),
            kind=SpanKind.CONSUMER,
            attributes={SPAN_ATTRIBUTES[k]: event[k] for k in _STARTED},
            start_time=_nanoseconds(event.time),
        )
        with self._lock:
            stale = self._open.get(event["instance_id"])
            self._open[event["instance_id"]] = (event["attempt"], span)
        if stale is not None:  # an earlier claim of it here, still running: its lease is gone
            stale[1].end()

    def _exception(self, event: Event) -> None:
        span = self._of(event, keep=True)
        if span is None:
            return
        error: BaseException = event["exception"]
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))

    def _stop(self, event: Event) -> None:
        span = self._of(event, keep=False)
        if span is None:
            return
        span.set_attributes(
            {SPAN_ATTRIBUTES[k]: event[k] for k in _STOPPED if event.data.get(k) is not None}
        )
        span.end(end_time=_nanoseconds(event.time))

    def _of(self, event: Event, *, keep: bool) -> Span | None:
        """The span of the event's step (None: it started before :func:`instrument`)."""
        with self._lock:
            entry = self._open.get(event["instance_id"])
            if entry is None or entry[0] != event["attempt"]:
                return None
            if not keep:
                del self._open[event["instance_id"]]
        return entry[1]


def instrument(tracer_provider: TracerProvider | None = None) -> StepTracing:
    """Turn tracing on for this process, with spans from ``tracer_provider`` (None: the
    global one); returns the tracing, whose ``detach()`` turns it off.

    Calling it again replaces the previous tracing.
    """
    previous = tracing.tracer
    if isinstance(previous, StepTracing):
        previous.detach()
    traced = StepTracing(tracer_provider)
    traced._detach = attach(traced, ("step.start", "step.exception", "step.stop"))
    tracing.tracer = traced
    return traced


def _to_text(context: Context | None) -> str | None:
    """A context's span as ``traceparent[ tracestate]``; None: no valid span in it."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    parent = carrier.get("traceparent")
    if parent is None:
        return None
    state = carrier.get("tracestate")
    return f"{parent} {state}" if state else parent


def _from_text(text: Any) -> Context:
    """The context a stored trace context continues; an empty one (a new trace) for none.

    Never the current context: a step's span has no parent but the one stored.
    """
    if not isinstance(text, str) or not text:
        return Context()
    parent, _, state = text.partition(" ")
    carrier = {"traceparent": parent}
    if state:
        carrier["tracestate"] = state
    return _W3C.extract(carrier, context=Context())


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
