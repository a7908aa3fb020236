"""``gen-durable run`` does what a Runner does: ``--cron``, ``--history``, ``--schema`` (on
every command, env ``GEN_DURABLE_SCHEMA``), ``--log-format json`` and ``-v/-vv``."""

from __future__ import annotations

import json
import socket
import subprocess
from typing import Any

import pytest
from _support.helpers import gen_durable_cli, wait_status, wait_until
from procs.run_options_app import Tick
from run_process import RunProcess
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable

WORKER = ["--import", "procs.run_options_app", "--poll-interval", "0.2", "--grace", "1"]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return gen_durable_cli(*args, env=env)


def listed(*args: str, **env: str) -> list[dict[str, Any]]:
    out = cli("ls", "--json", *args, **env)
    assert out.returncode == 0, out.stderr
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


@pytest.mark.parametrize("processes", [[], ["--processes", "2"]], ids=["one-runner", "processes-2"])
def test_cron_history_and_schema_in_json_logs(
    engine: Engine, db_url: str, processes: list[str]
) -> None:
    """A cron tick fires in the schema named by the environment; every command reads that
    schema by the option or the variable; the run's log is JSON lines with event fields.
    Under a supervisor, each child gets the schema, the schedules and the log format."""
    migrated = cli("migrate", GEN_DURABLE_DSN=db_url, GEN_DURABLE_SCHEMA="ops")
    assert migrated.returncode == 0, migrated.stderr
    assert "'ops'" in migrated.stdout
    run = RunProcess(
        *WORKER,
        "--cron",
        "procs.run_options_app:SCHEDULES",
        "--history",
        "all",
        "--log-format",
        "json",
        "-v",
        "--queues",
        "default=2",
        *processes,
        env={"GEN_DURABLE_DSN": db_url, "GEN_DURABLE_SCHEMA": "ops"},
    )
    try:

        def ticked() -> list[dict[str, Any]]:
            rows = listed("--schema", "ops", GEN_DURABLE_DSN=db_url)
            return [r for r in rows if r["status"] == "done"]

        tick = wait_until(ticked, timeout=60)[-1]  # a minute may turn: a second tick
        assert tick["fsm"] == "ops.Tick"
        # The option before the command's name, and the variable, name the same schema.
        by_env = listed(GEN_DURABLE_DSN=db_url, GEN_DURABLE_SCHEMA="ops")
        assert tick["id"] in [r["id"] for r in by_env]
        before = cli("--schema", "ops", "show", str(tick["id"]), "--json", GEN_DURABLE_DSN=db_url)
        assert before.returncode == 0, before.stderr
        history = json.loads(before.stdout)["history"]
        assert [(h["from_step"], h["kind"]) for h in history] == [("perform", "done")]
        assert listed(GEN_DURABLE_DSN=db_url) == []  # the default schema saw nothing
        leadership = run.wait_line(r'"event": "leadership"')
    finally:
        code = run.stop()
    assert code == 0, "\n".join(run.lines)
    with engine.connect() as conn:  # each tick fired once, whichever process led
        fired = conn.execute(text("SELECT count(*) FROM ops.gd_cron_ticks")).scalar()
        inserted = conn.execute(text("SELECT count(*) FROM ops.gd_instances")).scalar()
    assert fired == inserted and 1 <= inserted <= 2
    event = json.loads(leadership.string)
    assert event["level"] == "INFO" and event["logger"] == "gen_durable.events"
    assert event["role"] == "leader" and event["leader"] is True
    assert event["message"].startswith("leadership ")
    for line in run.lines[:-1]:
        if line.startswith("{"):
            json.loads(line)  # every log line is one JSON object


@pytest.mark.parametrize(
    ("flags", "shown", "hidden"),
    [
        ([], [], ["runner ", "step.stop"]),
        (["-v"], ["runner ", "started"], ["step.stop"]),
        (["-vv"], ["step.stop"], []),
    ],
    ids=["quiet", "v", "vv"],
)
def test_verbosity_levels(
    engine: Engine, db_url: str, flags: list[str], shown: list[str], hidden: list[str]
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Tick, args={})
    run = RunProcess(*WORKER, *flags, env={"GEN_DURABLE_DSN": db_url})
    try:
        wait_status(engine, iid, "done", timeout=60)
    finally:
        code = run.stop()
    assert code == 0
    log = "\n".join(run.lines)
    for word in shown:
        assert word in log, log
    for word in hidden:
        assert word not in log, log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "procs.run_options_app:NOT_A_SCHEDULE"], "is not a Cron schedule"),
        (["--cron", "procs.run_options_app:MISSING"], "MISSING"),
        (["--cron", "no_such_module_x:S"], "no_such_module_x"),
        (["--history", "some"], "'some' is not one of"),
        (["--log-format", "xml"], "'xml' is not one of"),
        (["--metrics-port", "-1"], "--metrics-port"),
    ],
    ids=["not-cron", "no-attr", "no-module", "history", "log-format", "port"],
)
def test_bad_run_options_are_usage_errors(db_url: str, args: list[str], message: str) -> None:
    out = cli("run", *WORKER, *args, GEN_DURABLE_DSN=db_url)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and message in out.stderr, out.stderr


def test_a_bad_schema_name_is_a_usage_error_on_any_command(db_url: str) -> None:
    for args in (["ls"], ["--schema", "a-b", "ls"], ["stats"]):
        out = cli(*args, "--schema", "no way", GEN_DURABLE_DSN=db_url)
        assert out.returncode == 2 and "plain identifier" in out.stderr, out.stderr
    out = cli("audit", GEN_DURABLE_DSN=db_url, GEN_DURABLE_SCHEMA="1bad")
    assert out.returncode == 2 and "GEN_DURABLE_SCHEMA" in out.stderr, out.stderr


def test_a_port_in_use_is_one_line_and_exit_1(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for extra in ([], ["--processes", "2"]):
            args = ["--health-port", port, "--endpoints-host", "127.0.0.1", *extra]
            out = cli("run", *WORKER, "--queues", "default=2", *args, GEN_DURABLE_DSN=db_url)
            assert out.returncode == 1, out.stderr
            assert "Traceback" not in out.stderr, out.stderr
            assert f"Error: cannot serve the health probes on 127.0.0.1:{port}" in out.stderr
