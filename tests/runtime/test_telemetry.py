"""Telemetry: the event bus, the events the API and runtime emit, logging, Prometheus."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _support.helpers import wait_status, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Job, Runner, events, telemetry
from gen_durable.runtime import claiming
from gen_durable.runtime.leader import Leader
from gen_durable.runtime.maintenance.gc import GarbageCollector
from gen_durable.runtime.maintenance.reaper import Reaper
from gen_durable.testing import advance, drain

FAST = {"lease": 2.0, "poll_interval": 0.2, "grace": 2.0}


class Hello(Job):
    name = "tel.Hello"

    def perform(self, args: dict[str, str]) -> str:
        return f"hello {args['who']}"


class Boom(Job):
    name = "tel.Boom"
    max_attempts = 2
    backoff = Backoff(base=30, jitter=0)

    def perform(self, args: Any) -> None:
        raise KeyError("missing")


class Gate(FSM):
    name = "tel.Gate"
    steps = ("wait", "open")

    def step(self, name: str, ctx: durable.Context) -> Any:
        return Await("open", then="open") if name == "wait" else Done(None)


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


# -- the bus -----------------------------------------------------------------------------------


def test_attach_receives_events_until_detached() -> None:
    seen: list[telemetry.Event] = []
    detach = telemetry.attach(seen.append)
    events.emit("gc", deleted=3, retention=60.0)
    detach()
    detach()  # harmless twice
    events.emit("gc", deleted=4, retention=60.0)
    assert [(e.name, e["deleted"], e.data["retention"]) for e in seen] == [("gc", 3, 60.0)]
    assert seen[0].time > 0


def test_attach_can_filter_by_event_name_and_rejects_unknown_names() -> None:
    with telemetry.record(["claim"]) as recording:
        events.emit("gc", deleted=1, retention=1.0)
        events.emit("claim", queue="q", node_id="n", count=1, instance_ids=[1])
    assert recording.names() == ["claim"]
    with pytest.raises(ValueError, match="unknown telemetry events"):
        telemetry.attach(print, ["step.begin"])
    with pytest.raises(TypeError):
        telemetry.attach("not callable")  # type: ignore[arg-type]


def test_a_failing_handler_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: telemetry.Event) -> None:
        raise RuntimeError("handler bug")

    detach = telemetry.attach(broken)
    try:
        with telemetry.record() as recording:
            events.emit("gc", deleted=1, retention=1.0)
    finally:
        detach()
    assert recording.names() == ["gc"]
    assert any("handler bug" in (r.exc_text or str(r.exc_info)) for r in caplog.records)


def test_emit_builds_nothing_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_event(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an Event was built with no handler and logging off")

    monkeypatch.setattr(events, "Event", no_event)
    logging.getLogger("gen_durable.events").setLevel(logging.WARNING)
    try:
        events.emit("step.start", instance_id=1)
        assert not events.active("step.start")
        with pytest.raises(AssertionError), telemetry.record():  # with a handler: built
            events.emit("step.start", instance_id=1)
    finally:
        logging.getLogger("gen_durable.events").setLevel(logging.NOTSET)


# -- events from the client API and the runtime --------------------------------------------------


def test_insert_and_signal_emit_events(session: Session) -> None:
    with telemetry.record() as recording:
        first = durable.insert(session, Gate, correlation_key="g:1")
        again = durable.insert(session, Gate, correlation_key="g:1")
        ids = durable.insert_all(session, [Hello.new(args={"who": "a"}), Gate.new()])
        sent = durable.signal(session, "g:1", "open", {"x": 1})
    assert again == first
    inserts = recording.of("insert")
    assert [e.data for e in inserts] == [
        {"instance_ids": [first], "fsms": ["tel.Gate"], "queues": ["default"], "existing": 0},
        {"instance_ids": [], "fsms": [], "queues": [], "existing": 1},
        {
            "instance_ids": ids,
            "fsms": ["tel.Hello", "tel.Gate"],
            "queues": ["default", "default"],
            "existing": 0,
        },
    ]
    [signalled] = recording.of("signal")
    assert signalled.data == {
        "instance_id": first,
        "queue": "default",
        "signal": "open",
        "signal_id": sent.signal_id,
        "duplicate": False,
        "started": False,
    }


def test_signal_with_start_emits_the_insert(session: Session) -> None:
    with telemetry.record(["insert", "signal"]) as recording:
        result = durable.signal(session, "g:2", "open", start=Gate)
    assert recording.names() == ["insert", "signal"]
    assert recording.of("insert")[0]["instance_ids"] == [result.instance_id]
    assert recording.of("signal")[0]["started"] is True


def test_steps_emit_claim_start_stop_exception_and_retry(engine: Engine) -> None:
    ok = insert(engine, Hello, args={"who": "x"})
    bad = insert(engine, Boom)
    with telemetry.record() as recording:
        drain(engine)
    [claim] = recording.of("claim")
    assert claim["queue"] == "default" and sorted(claim["instance_ids"]) == sorted([ok, bad])
    assert claim["count"] == 2 and claim["node_id"].startswith("gen_durable.testing:")
    starts = {e["instance_id"]: e.data for e in recording.of("step.start")}
    assert starts[ok] == {
        "instance_id": ok,
        "fsm": "tel.Hello",
        "step": "perform",
        "queue": "default",
        "attempt": 1,
        "max_attempts": 10,
        "trace_context": None,
    }
    stops = {e["instance_id"]: e.data for e in recording.of("step.stop")}
    assert stops[ok]["kind"] == "done" and stops[ok]["committed"] is True
    assert stops[ok]["status"] == "done" and stops[ok]["duration"] >= 0
    assert stops[bad]["kind"] == "retry"
    [exception] = recording.of("step.exception")
    assert exception["instance_id"] == bad and isinstance(exception["exception"], KeyError)
    [retry] = recording.of("retry")
    assert retry.data | {"delay": None} == {
        "instance_id": bad,
        "fsm": "tel.Boom",
        "step": "perform",
        "queue": "default",
        "attempt": 1,
        "max_attempts": 2,
        "delay": None,
        "error_type": "KeyError",
    }
    assert retry["delay"] == 30
    order = [e.name for e in recording.events if e.data.get("instance_id") == ok]
    assert order == ["step.start", "step.stop"]

    advance(engine, 30)
    with telemetry.record() as recording:
        drain(engine)
    # The last attempt fails for good: an exception, but no retry.
    assert recording.names() == ["claim", "step.start", "step.exception", "step.stop"]
    assert recording.of("step.stop")[0]["kind"] == "error"


def test_a_runner_emits_through_the_dispatcher(engine: Engine) -> None:
    iid = insert(engine, Hello, args={"who": "runner"})
    with (
        telemetry.record(["claim", "step.stop"]) as recording,
        Runner(engine, queues={"default": 2}, **FAST) as runner,
    ):
        wait_status(engine, iid, "done")
        wait_until(lambda: recording.of("step.stop"))
    [claim] = recording.of("claim")
    assert claim["instance_ids"] == [iid] and claim["node_id"] == runner.node_id
    assert recording.of("step.stop")[0]["instance_id"] == iid


def test_reaper_gc_and_leadership_emit(engine: Engine) -> None:
    iid = insert(engine, Hello, args={"who": "lost"})
    [claimed] = claiming.claim(engine, "default", ["tel.Hello"], 1, "dead-node", 0.001)
    wait_until(lambda: _lease_expired(engine, iid))
    gone = insert(engine, Hello, args={"who": "gone"})
    with Session(engine) as s, s.begin():
        durable.cancel(s, gone)
    with telemetry.record() as recording:
        Reaper(engine, lambda queues: None, 1.0, node_ttl=60.0).run_once()
        GarbageCollector(engine, retention=0.0, interval=1.0).run_once()
        leader = Leader(engine, "node-a", ttl=5.0)
        leader.run_once()
        Leader(engine, "node-b", ttl=5.0).run_once()  # not the leader: no change, no event
        leader.stop()
    assert claimed.id == iid
    [rescue] = recording.of("reaper.rescue")
    assert rescue.data == {"count": 1, "instance_ids": [iid], "failed_ids": []}
    [gc] = recording.of("gc")
    assert gc.data == {"deleted": 1, "retention": 0.0}
    assert [e.data for e in recording.of("leadership")] == [
        {"role": "leader", "node_id": "node-a", "leader": True},
        {"role": "leader", "node_id": "node-a", "leader": False},
    ]


def _lease_expired(engine: Engine, iid: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT lease_expires_at < now() FROM gen_durable.gd_instances WHERE id = :i"),
                {"i": iid},
            ).scalar()
        )


# -- the default logger ------------------------------------------------------------------------


def test_events_are_logged_with_structured_fields(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    iid = insert(engine, Hello, args={"who": "log"})
    with caplog.at_level(logging.DEBUG, logger="gen_durable.events"):
        drain(engine)
    records = [r for r in caplog.records if r.name == "gen_durable.events"]
    stop = next(r for r in records if getattr(r, "event", None) == "step.stop")
    assert stop.levelno == logging.DEBUG
    assert (stop.instance_id, stop.fsm, stop.kind, stop.committed) == (  # type: ignore[attr-defined]
        iid,
        "tel.Hello",
        "done",
        True,
    )
    assert stop.getMessage().startswith(f"step.stop instance_id={iid} fsm='tel.Hello'")
    assert {getattr(r, "event", None) for r in records} >= {"claim", "step.start", "step.stop"}


def test_logged_fields_never_clash_with_log_record_attributes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="gen_durable.events"):
        events.emit("gc", deleted=1, retention=1.0, name="clash", message="clash too")
    [record] = caplog.records
    assert record.name == "gen_durable.events"
    assert (record.gd_name, record.gd_message) == ("clash", "clash too")  # type: ignore[attr-defined]


def test_the_default_logger_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    telemetry.detach_default_logger()
    try:
        with caplog.at_level(logging.DEBUG, logger="gen_durable.events"):
            events.emit("gc", deleted=1, retention=1.0)
        assert caplog.records == []
    finally:
        telemetry.attach_default_logger()
    with caplog.at_level(logging.DEBUG, logger="gen_durable.events"):
        events.emit("gc", deleted=1, retention=1.0)
    assert len(caplog.records) == 1


def test_every_event_has_a_description_and_a_level() -> None:
    assert set(telemetry.EVENTS) == set(telemetry.LEVELS)
    assert set(telemetry.EVENTS) == {
        "insert",
        "signal",
        "claim",
        "step.start",
        "step.stop",
        "step.exception",
        "retry",
        "reaper.rescue",
        "release",
        "gc",
        "leadership",
    }


# -- Prometheus ----------------------------------------------------------------------------------


def test_prometheus_counts_steps_inserts_and_retries(engine: Engine) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from gen_durable.telemetry import prometheus

    registry = prometheus_client.CollectorRegistry()
    metrics = prometheus.instrument(registry)
    try:
        insert(engine, Hello, args={"who": "a"})
        insert(engine, Hello, args={"who": "b"})
        gate = insert(engine, Gate)
        insert(engine, Boom)
        with Session(engine) as s, s.begin():
            durable.signal(s, gate, "open")
        drain(engine)
    finally:
        metrics.detach()
    value = registry.get_sample_value
    assert value("gen_durable_inserted_total", {"fsm": "tel.Hello", "queue": "default"}) == 2
    assert value("gen_durable_signals_total", {"signal": "open"}) == 1
    assert value("gen_durable_claimed_total", {"queue": "default"}) == 5  # the gate twice
    hello = {"fsm": "tel.Hello", "step": "perform"}
    assert value("gen_durable_steps_total", {**hello, "outcome": "done"}) == 2
    assert value("gen_durable_step_duration_seconds_count", hello) == 2
    boom = {"fsm": "tel.Boom", "step": "perform"}
    assert value("gen_durable_steps_total", {**boom, "outcome": "retry"}) == 1
    assert value("gen_durable_step_exceptions_total", {**boom, "error": "KeyError"}) == 1
    assert value("gen_durable_retries_total", boom) == 1
    # Detached: nothing more is counted.
    insert(engine, Hello, args={"who": "c"})
    assert value("gen_durable_inserted_total", {"fsm": "tel.Hello", "queue": "default"}) == 2


def test_prometheus_maintenance_metrics() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from gen_durable.telemetry import prometheus

    registry = prometheus_client.CollectorRegistry()
    metrics = prometheus.instrument(registry, namespace="app")
    try:
        events.emit("reaper.rescue", count=3, instance_ids=[1, 2, 3], failed_ids=[3])
        events.emit("gc", deleted=5, retention=60.0)
        events.emit("leadership", role="leader", node_id="n", leader=True)
    finally:
        metrics.detach()
    value = registry.get_sample_value
    assert value("app_reaped_total", {"result": "available"}) == 2
    assert value("app_reaped_total", {"result": "failed"}) == 1
    assert value("app_gc_deleted_total") == 5
    assert value("app_leader", {"role": "leader"}) == 1
