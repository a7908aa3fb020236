"""``gen-durable run --metrics-port --health-port``: scraped over HTTP from the real entry
point, with one runner and with ``--processes 2``; readiness follows the database."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from _support.dbutil import EmbeddedServer, own_server
from _support.helpers import wait_status, wait_until
from procs.run_options_app import Tick
from run_process import RunProcess, get
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import gen_durable as durable
from gen_durable.endpoints import RunnerProbe, probe_engine
from gen_durable.store import schema

ENDPOINTS = ["--metrics-port", "0", "--health-port", "0", "--endpoints-host", "127.0.0.1"]
WORKER = ["--import", "procs.run_options_app", "--poll-interval", "0.2", "--grace", "1"]


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of the samples of metric ``name`` in an exposition."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def ready(port: int) -> bool:
    return get(port, "/readyz")[0] == 200


@pytest.mark.parametrize("processes", [None, 2], ids=["one-runner", "processes-2"])
def test_metrics_and_probes_are_served_over_http(
    engine: Engine, db_url: str, processes: int | None
) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Tick.new(args={}) for _ in range(3)])
    extra = [] if processes is None else ["--processes", str(processes)]
    run = RunProcess(
        *WORKER, *ENDPOINTS, "--queues", "default=4", *extra, env={"GEN_DURABLE_DSN": db_url}
    )
    try:
        metrics, health = run.port("metrics"), run.port("health")
        for iid in ids:
            wait_status(engine, iid, "done", timeout=60)
        assert wait_until(lambda: ready(health), timeout=60)
        status, body = get(health, "/livez")
        assert status == 200 and json.loads(body) == {"ok": True, "detail": "alive"}
        assert get(health, "/nowhere")[0] == 404

        def scraped() -> str | None:
            text = get(metrics, "/metrics")[1]
            steps = samples(text, "gen_durable_steps_total")
            return text if sum(steps.values()) >= 3 else None

        text = wait_until(scraped, timeout=60)
        depth = samples(text, "gen_durable_queue_depth")
        # Counted once, by the process serving the endpoint (not once per child).
        assert depth == {'{queue="default",status="done"}': 3.0}
        assert samples(text, "gen_durable_database_up") == {"": 1.0}
        steps = samples(text, "gen_durable_steps_total")
        assert steps == {'{fsm="ops.Tick",outcome="done",step="perform"}': 3.0}
        assert text.count("# TYPE gen_durable_queue_depth gauge") == 1
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.lines)


@pytest.fixture
def private_server() -> Iterator[EmbeddedServer]:
    """A server of this test's own, stopped under the runner."""
    with own_server() as server:
        yield server


@pytest.mark.parametrize("processes", [None, 2], ids=["one-runner", "processes-2"])
def test_readiness_goes_false_while_the_database_is_down(
    private_server: EmbeddedServer, processes: int | None
) -> None:
    engine = create_engine(private_server.url, poolclass=NullPool)
    schema.install(engine)
    engine.dispose()
    extra = [] if processes is None else ["--processes", str(processes)]
    run = RunProcess(
        *WORKER,
        *ENDPOINTS,
        "--queues",
        "default=2",
        *extra,
        env={"GEN_DURABLE_DSN": private_server.url},
    )
    try:
        health, metrics = run.port("health"), run.port("metrics")
        wait_until(lambda: ready(health), timeout=60)
        private_server.stop("fast")
        _, body = wait_until(
            lambda: (answer := get(health, "/readyz"))[0] == 503 and answer, timeout=60
        )
        assert "the database does not answer" in json.loads(body)["detail"]
        assert get(health, "/livez")[0] == 200  # the loops keep running, and retrying
        assert samples(get(metrics, "/metrics")[1], "gen_durable_database_up") == {"": 0.0}
        private_server.start()
        wait_until(lambda: ready(health), timeout=90)
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.lines)


def test_liveness_names_a_runner_thread_that_stopped(engine: Engine, db_url: str) -> None:
    """The probe of a runner in this process: live while every thread it started runs;
    a maintenance loop that ended makes it false, by name."""
    with durable.Runner(engine, {"default": 1}, poll_interval=0.2, listen=False) as runner:
        probe = RunnerProbe(runner.node_id, runner.lease, probe_engine(db_url))
        assert probe.live() == (True, "alive")
        assert wait_until(lambda: probe.ready()[0], timeout=30)
        runner.reaper.stop()  # as if its loop had died
        assert probe.live() == (False, "threads stopped: gd-reaper")
