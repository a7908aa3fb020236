"""Re-run evidence: a step whose claim ended without its transition (a runner SIGKILLed,
a shutdown past its grace, a step that raised) says so in ``show``; the metrics count it;
a claim or commit cut off logs one line, the SQL only at DEBUG."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _support.helpers import TESTS, snapshot, wait_status, wait_until
from procs.run_options_app import Flaky, Slow, Tick
from run_process import RunProcess, get
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
import gen_durable.testing
from gen_durable import faults, store
from gen_durable.cli import detail

WORKER = ["--import", "procs.run_options_app", "--poll-interval", "0.2", "--lease", "2"]


def show(iid: int, db_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": db_url}
    out = subprocess.run(
        [sys.executable, "-m", "gen_durable", "show", str(iid), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out


def shown(iid: int, db_url: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(show(iid, db_url, "--json").stdout)
    return data


def finishing_attempt(iid: int, db_url: str) -> int:
    """The ATTEMPT ``gen-durable ls`` shows for the (done) instance."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": db_url}
    out = subprocess.run(
        [sys.executable, "-m", "gen_durable", "ls", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    [row] = [r for r in json.loads(out.stdout) if r["id"] == iid]
    assert row["status"] == "done"
    return int(row["attempt"])


def runs(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


def started(engine: Engine, tmp_path: Path) -> tuple[int, Path]:
    marks = tmp_path / "marks"
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Slow, args={"marks": str(marks)})
    return iid, marks


def test_a_sigkilled_runner_leaves_evidence_that_the_step_ran_twice(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    iid, marks = started(engine, tmp_path)
    first = RunProcess(*WORKER, "--queues", "default=1", env={"GEN_DURABLE_DSN": db_url})
    try:
        node = first.wait_line(r"^worker (\S+): queues").group(1)
        wait_until(lambda: runs(marks) == 1, timeout=60)
    finally:
        first.kill()  # SIGKILL: no release, no goodbye; the lease lapses
    second = RunProcess(
        *WORKER,
        "--metrics-port",
        "0",
        "--endpoints-host",
        "127.0.0.1",
        env={"GEN_DURABLE_DSN": db_url},
    )
    try:
        done = wait_status(engine, iid, "done", timeout=90)
        assert done.attempt == 0 and runs(marks) == 2  # the attempt counter forgot; not we
        metrics = second.port("metrics")
        text = get(metrics, "/metrics")[1]
        assert 'gen_durable_reruns_total{reason="lease_expired"} 1.0' in text
    finally:
        assert second.stop() == 0
    data = shown(iid, db_url)
    [row] = data["reruns"]["rows"]
    assert (row["step"], row["reason"], row["runner"], row["attempt"]) == (
        "perform",
        "lease_expired",
        node,
        1,
    )
    summary = f"step `perform` ran 2 times: lease of runner {node} expired"
    assert data["reruns"]["summary"] == [summary]
    assert summary in show(iid, db_url).stdout
    assert finishing_attempt(iid, db_url) == 2  # what `ls` shows of it


def test_a_release_at_shutdown_is_recorded(engine: Engine, db_url: str, tmp_path: Path) -> None:
    iid, marks = started(engine, tmp_path)
    run = RunProcess(*WORKER, "--grace", "0.2", env={"GEN_DURABLE_DSN": db_url})
    try:
        node = run.wait_line(r"^worker (\S+): queues").group(1)
        wait_until(lambda: runs(marks) == 1, timeout=60)
    finally:
        assert run.stop() == 0
    data = shown(iid, db_url)
    assert data["status"] == "available"
    [row] = data["reruns"]["rows"]
    assert (row["reason"], row["runner"]) == ("released", node)
    assert data["reruns"]["summary"] == [
        f"step `perform` ran 1 time so far: released at the shutdown of runner {node}"
    ]


def test_a_step_that_raised_is_recorded_with_its_error(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Flaky, args={"marks": str(tmp_path / "marks")})

    def finished() -> bool:
        durable.testing.drain(engine)  # the retry is due 10 ms after the failure
        return snapshot(engine, iid).status == "done"

    wait_until(finished, timeout=30)
    data = shown(iid, db_url)
    [row] = data["reruns"]["rows"]
    assert row["reason"] == "raised" and row["runner"] is None
    assert row["error"].startswith("ConnectionError: the payment gateway hung up")
    assert data["reruns"]["summary"] == [
        "step `perform` ran 2 times: it raised ConnectionError: the payment gateway hung up"
    ]
    assert finishing_attempt(iid, db_url) == 2
    with engine.begin() as conn:  # the evidence goes with its instance
        assert store.maintenance.collect_garbage(conn, 0.0, 100, None) == 1
        assert conn.execute(text("SELECT count(*) FROM gen_durable.gd_reruns")).scalar() == 0


def test_a_successful_step_leaves_no_rerun(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Tick, args={})
    durable.testing.drain(engine)
    assert shown(iid, db_url)["reruns"] == {"rows": [], "summary": []}
    assert snapshot(engine, iid).attempt == 0 and finishing_attempt(iid, db_url) == 1


def cut_connection(conn: Any) -> BaseException:
    """A real connection cut: the backend is terminated under the statement."""
    conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid()) /* cut here */")
    raise AssertionError("the backend survived its termination")


@pytest.mark.parametrize(
    ("point", "what"), [("claim", "claim on default failed"), ("commit", "commit failed")]
)
def test_a_cut_connection_logs_one_line_and_the_sql_only_at_debug(
    engine: Engine, caplog: pytest.LogCaptureFixture, point: str, what: str
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Tick, args={})
    rule = faults.Rule(point, "raise", count=1, error=cut_connection)
    with (
        caplog.at_level(logging.DEBUG, logger="gen_durable.runtime"),
        faults.inject(rule) as plan,
        durable.Runner(engine, {"default": 1}, poll_interval=0.1, listen=False),
    ):
        wait_status(engine, iid, "done", timeout=60)
    assert plan.fired(point) == 1
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING and what in r.getMessage()]
    [line] = lines
    message = line.getMessage()
    assert "(AdminShutdown: terminating connection" in message and line.exc_info is None
    assert "cut here" not in message and "[SQL" not in message and "\n" not in message
    assert "retrying" in message or "claiming again" in message
    whole = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert any("cut here" in str(r.exc_info[1]) for r in whole if r.exc_info)


def rerun(
    version: int, reason: str, step: str = "charge", runner: str | None = "r1"
) -> dict[str, Any]:
    error = "TimeoutError: slow" if reason == "raised" else None
    return {"step": step, "version": version, "reason": reason, "runner": runner, "error": error}


@pytest.mark.parametrize(
    ("rows", "instance", "expected"),
    [
        # three attempts raised, the fourth succeeded (a retry keeps the version)
        (
            [rerun(2, "raised"), rerun(2, "raised"), rerun(2, "raised")],
            {"version": 3, "finished_at": "t"},
            ["step `charge` ran 4 times: it raised TimeoutError: slow"],
        ),
        # out of attempts: the last one raised and failed it
        (
            [rerun(0, "raised"), rerun(0, "raised")],
            {"version": 0, "finished_at": "t"},
            ["step `charge` ran 2 times: it raised TimeoutError: slow"],
        ),
        # the reaper failed it after its last attempt's lease lapsed: no further run
        (
            [rerun(3, "lease_expired"), rerun(3, "lease_expired", runner="r2")],
            {"version": 3, "finished_at": "t"},
            ["step `charge` ran 2 times: lease of runner r1 expired; lease of runner r2 expired"],
        ),
        # two separate episodes of two steps, one still to run again
        (
            [rerun(1, "lease_expired", step="reserve"), rerun(5, "released", runner="r3")],
            {"version": 5, "finished_at": None},
            [
                "step `reserve` ran 2 times: lease of runner r1 expired",
                "step `charge` ran 1 time so far: released at the shutdown of runner r3",
            ],
        ),
    ],
    ids=["retried-then-done", "failed", "reaped-failed", "two-steps"],
)
def test_the_summary_counts_each_run_of_a_step(
    rows: list[dict[str, Any]], instance: dict[str, Any], expected: list[str]
) -> None:
    assert detail.summary(rows, instance) == expected


def test_a_release_is_an_event_and_counted_as_a_rerun(engine: Engine, tmp_path: Path) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from gen_durable.telemetry import prometheus

    registry = prometheus_client.CollectorRegistry()
    metrics = prometheus.instrument(registry)
    marks = tmp_path / "marks"
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Slow, args={"marks": str(marks), "sleep": 2})
    try:
        with durable.telemetry.record(["release"]) as seen:
            runner = durable.Runner(engine, {"default": 1}, poll_interval=0.1, listen=False)
            with runner:
                wait_until(lambda: runs(marks) == 1, timeout=30)
                runner.stop(grace=0)
    finally:
        metrics.detach()
    [event] = seen.of("release")
    assert event["instance_ids"] == [iid] and event["node_id"] == runner.node_id
    reruns = registry.get_sample_value("gen_durable_reruns_total", {"reason": "released"})
    assert reruns == 1.0
