"""OpenTelemetry: a span per step, in the trace of the span that inserted the instance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (the dev extra)")

from _support.helpers import scalar, wait_status, wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Next, Runner, Spawn, tracing
from gen_durable.telemetry import otel
from gen_durable.testing import drain

FAST = {"lease": 2.0, "poll_interval": 0.2, "grace": 2.0}

CURRENT_IN_STEP: list[SpanContext] = []
"""The span current while Greet's code ran, one per run."""


class Greet(Job):
    name = "otel.Greet"

    def perform(self, args: dict[str, str]) -> str:
        CURRENT_IN_STEP.append(trace.get_current_span().get_span_context())
        return f"hello {args['who']}"


class TwoSteps(FSM):
    name = "otel.TwoSteps"
    steps = ("first", "second")

    def step(self, name: str, ctx: durable.Context) -> Any:
        return Next("second") if name == "first" else Done(None)


class Broken(Job):
    name = "otel.Broken"
    max_attempts = 1

    def perform(self, args: Any) -> None:
        raise ValueError("no luck")


class Fan(FSM):
    name = "otel.Fan"
    steps = ("spawn", "joined")

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "spawn":
            kids = [Greet.new(args={"who": who}) for who in ("a", "b")]
            return Spawn(kids, then="joined")
        return Done(None)


@dataclass
class Traces:
    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def steps(self, fsm: str | None = None) -> list[ReadableSpan]:
        """The exported step spans (of one class), in the order they started."""
        found = [
            s
            for s in self.exporter.get_finished_spans()
            if s.name.startswith("gen_durable.step ")
            and (fsm is None or attributes(s).get("gen_durable.fsm") == fsm)
        ]
        return sorted(found, key=lambda s: s.start_time or 0)


@pytest.fixture
def traces() -> Iterator[Traces]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = otel.instrument(provider)
    CURRENT_IN_STEP.clear()
    try:
        yield Traces(provider.get_tracer("tests"), exporter)
    finally:
        traced.detach()
        provider.shutdown()
    assert tracing.tracer is None


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


def stored(engine: Engine, iid: int) -> object:
    return scalar(engine, "SELECT trace_context FROM gen_durable.gd_instances WHERE id = :i", i=iid)


def traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_runner_runs_the_step_in_a_span_of_the_inserting_trace(
    engine: Engine, traces: Traces
) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        iid = insert(engine, Greet, args={"who": "otel"})
    asked = request.get_span_context()
    assert stored(engine, iid) == traceparent(asked)

    with Runner(engine, **FAST):
        wait_status(engine, iid, "done")
        (span,) = wait_until(lambda: traces.steps(), timeout=10)

    assert span.name == "gen_durable.step otel.Greet.perform"
    assert span.kind is SpanKind.CONSUMER
    assert span.context is not None and span.context.trace_id == asked.trace_id
    assert span.parent is not None and span.parent.span_id == asked.span_id
    assert span.status.status_code is StatusCode.UNSET
    assert attributes(span) == {
        "gen_durable.instance_id": iid,
        "gen_durable.fsm": "otel.Greet",
        "gen_durable.step": "perform",
        "gen_durable.queue": "default",
        "gen_durable.attempt": 1,
        "gen_durable.outcome": "done",
        "gen_durable.next_step": "perform",
        "gen_durable.committed": True,
    }
    # The step span is current while the step's code runs: its own spans nest under it.
    assert [span.context] == CURRENT_IN_STEP


def test_each_step_of_an_fsm_has_its_span_in_the_same_trace(engine: Engine, traces: Traces) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        insert(engine, TwoSteps)
    drain(engine)
    first, second = traces.steps()
    assert [attributes(s)["gen_durable.step"] for s in (first, second)] == ["first", "second"]
    assert [attributes(s)["gen_durable.outcome"] for s in (first, second)] == ["next", "done"]
    asked = request.get_span_context()
    for span in (first, second):
        assert span.context is not None and span.context.trace_id == asked.trace_id
        assert span.parent is not None and span.parent.span_id == asked.span_id


def test_a_step_that_raised_has_an_error_span_with_the_exception(
    engine: Engine, traces: Traces
) -> None:
    with traces.tracer.start_as_current_span("request"):
        iid = insert(engine, Broken)
    drain(engine)
    assert wait_status(engine, iid, "failed").status == "failed"
    (span,) = traces.steps()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: no luck"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "no luck"
    assert attributes(span)["gen_durable.committed"] is True


def test_with_no_span_current_at_insert_the_step_span_is_a_root(
    engine: Engine, traces: Traces
) -> None:
    iid = insert(engine, Greet, args={"who": "nobody"})
    assert stored(engine, iid) is None
    with traces.tracer.start_as_current_span("unrelated"):  # current while draining: ignored
        drain(engine)
    (span,) = traces.steps()
    assert span.parent is None


def test_without_instrument_nothing_is_captured(engine: Engine) -> None:
    assert tracing.tracer is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("tests").start_as_current_span("request"):
        iid = insert(engine, Greet, args={"who": "untraced"})
    drain(engine)
    assert stored(engine, iid) is None
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]


def test_children_of_a_spawn_run_under_the_span_of_the_step_that_spawned_them(
    engine: Engine, traces: Traces
) -> None:
    with traces.tracer.start_as_current_span("request") as request:
        parent = insert(engine, Fan)
    drain(engine)
    assert wait_status(engine, parent, "done").status == "done"
    spawn, joined = traces.steps("otel.Fan")
    kids = traces.steps("otel.Greet")
    assert len(kids) == 2
    asked = request.get_span_context()
    assert spawn.context is not None and joined.parent is not None
    assert joined.parent.span_id == asked.span_id
    for kid in kids:
        assert kid.context is not None and kid.context.trace_id == asked.trace_id
        assert kid.parent is not None and kid.parent.span_id == spawn.context.span_id


def test_insert_all_and_signal_with_start_store_the_current_trace(
    engine: Engine, traces: Traces
) -> None:
    with (
        traces.tracer.start_as_current_span("request") as request,
        Session(engine) as s,
        s.begin(),
    ):
        ids = durable.insert_all(
            s, [Greet.new(args={"who": "a"}), TwoSteps.new(correlation_key="two")]
        )
        started = durable.signal(s, "three", "go", start=TwoSteps)
    expected = traceparent(request.get_span_context())
    assert [stored(engine, i) for i in [*ids, started.instance_id]] == [expected] * 3


def test_the_tracestate_travels_with_the_trace(engine: Engine, traces: Traces) -> None:
    remote = TraceContextTextMapPropagator().extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=opaque,other=1",
        }
    )
    with traces.tracer.start_as_current_span("request", context=remote) as request:
        iid = insert(engine, Greet, args={"who": "state"})
    asked = request.get_span_context()
    assert stored(engine, iid) == f"{traceparent(asked)} vendor=opaque,other=1"
    drain(engine)
    (span,) = traces.steps()
    assert span.context is not None
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.context.trace_state.to_header() == "vendor=opaque,other=1"


def test_instrument_again_replaces_the_previous_tracing(traces: Traces) -> None:
    first = tracing.tracer
    second = otel.instrument(TracerProvider())
    try:
        assert tracing.tracer is second and second is not first
        assert isinstance(first, otel.StepTracing)
        first.detach()  # detaching the replaced one leaves the new one in place
        assert tracing.tracer is second
    finally:
        second.detach()
    assert tracing.tracer is None
