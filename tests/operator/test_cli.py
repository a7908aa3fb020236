"""The ``gen-durable`` command line through its real entry point, against real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from _support.helpers import TESTS, snapshot, wait_status
from _support.helpers import gen_durable_cli as cli
from procs.cli_app import Gate, Greet
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
import gen_durable.testing


def as_json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_ls_show_signal_cancel_retry_stats_prune(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        gate = durable.insert(s, Gate, correlation_key="gate:1")
        greet = durable.insert(s, Greet, args={"who": "ops"})
    listed = as_json(cli("ls", "--json", dsn=db_url))
    assert [r["id"] for r in listed] == [greet, gate]
    assert [r["id"] for r in as_json(cli("ls", "--json", "--class", "cli.Gate", dsn=db_url))] == [
        gate
    ]
    page = as_json(cli("ls", "--json", "--limit", "1", "--before", str(greet), dsn=db_url))
    assert [r["id"] for r in page] == [gate]
    assert "more: --before" in cli("ls", "--limit", "1", dsn=db_url).stdout

    sent = as_json(cli("signal", "gate:1", "open", '{"by": "cli"}', "--json", dsn=db_url))
    assert sent["instance_id"] == gate and sent["duplicate"] is False
    shown = as_json(cli("show", "gate:1", "--json", dsn=db_url))
    assert shown["id"] == gate and shown["signals"][0]["payload"] == {"by": "cli"}
    assert "open (pending)" in cli("show", str(gate), dsn=db_url).stdout

    assert cli("cancel", str(greet), dsn=db_url).stdout.strip() == "cancelled"
    assert "already finished" in cli("cancel", str(greet), dsn=db_url).stdout
    assert snapshot(engine, greet).status == "cancelled"
    assert "runnable again" in cli("retry", str(greet), dsn=db_url).stdout
    stats = as_json(cli("stats", "--json", dsn=db_url))
    assert {(r["queue"], r["status"], r["n"]) for r in stats["counts"]} == {
        ("default", "available", 2)
    }
    assert {r["status"] for r in stats["steps"]} == {"available"}
    assert sum(r["n"] for r in stats["steps"]) == 2
    text_out = cli("stats", dsn=db_url).stdout
    assert "per step" in text_out and "finished in the last minutes" in text_out
    assert cli("prune", "--older-than", "0", dsn=db_url).stdout.strip().startswith("pruned 0")


def test_retry_says_where_a_cancelled_instance_resumes(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        gate = durable.insert(s, Gate)
    gen_durable.testing.drain(engine, fsms=[Gate])  # parked on its await
    assert cli("cancel", str(gate), dsn=db_url).stdout.strip() == "cancelled"
    said = cli("retry", str(gate), dsn=db_url).stdout.strip()
    assert said == f"instance {gate} awaits its signals again"


def test_stats_counts_what_finished_in_the_last_minutes(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Greet.new(args={"who": str(n)}) for n in range(4)])
    durable.testing.drain(engine)
    with engine.begin() as conn:  # one finished ten minutes ago, one an hour ago
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET finished_at = now() - "
                "CASE id WHEN :a THEN interval '10 minutes' ELSE interval '1 hour' END "
                "WHERE id IN (:a, :b)"
            ),
            {"a": ids[0], "b": ids[1]},
        )
    stats = as_json(cli("stats", "--json", dsn=db_url))
    assert stats["throughput"] == [
        {"queue": "default", "status": "done", "last_1m": 2, "last_5m": 2, "last_15m": 3}
    ]
    assert stats["steps"] == []  # nothing unfinished


def test_bad_input_gives_clear_messages_and_exit_codes(db_url: str) -> None:
    missing = cli("show", "999999", dsn=db_url)
    assert missing.returncode == 1 and "NotFound" in missing.stderr
    bad_json = cli("signal", "1", "x", "{not json", dsn=db_url)
    assert bad_json.returncode == 2 and "not JSON" in bad_json.stderr
    no_dsn = cli("ls")
    assert no_dsn.returncode == 2 and "GEN_DURABLE_DSN" in no_dsn.stderr
    down = cli("ls", dsn="postgresql://nobody@127.0.0.1:1/none")
    assert down.returncode == 3 and "cannot connect" in down.stderr
    bad_queues = cli("run", "--queues", "default=zero", dsn=db_url)
    assert bad_queues.returncode == 2 and "NAME=CONCURRENCY" in bad_queues.stderr


def test_run_is_a_worker_that_stops_cleanly_on_sigterm(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Greet, args={"who": "worker"})
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": db_url}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gen_durable",
            "run",
            "--import",
            "procs.cli_app",
            "--queues",
            "default=2",
            "--poll-interval",
            "0.2",
            "--grace",
            "1",
        ],
        env=env,
        cwd=TESTS,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = wait_status(engine, iid, "done", timeout=30)
        assert done.result == "hello worker"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0
