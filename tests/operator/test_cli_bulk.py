"""Bulk cancel and retry, ``prune --dry-run``, ``workers``, ``queues`` and ``pause`` of an
unserved queue, through the real entry point in a subprocess (output and exit codes)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys

import pytest
from _support.helpers import TESTS, backend_waiting_on_lock, snapshot
from procs.cli_app import Gate, Greet
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from test_cli import as_json, cli
from test_cli_mistakes import assert_short_failure, empty_db_url  # noqa: F401 - a fixture

import gen_durable as durable
from gen_durable import store
from gen_durable.client.bulk import BulkFilter, bulk_preview, bulk_start, bulk_step


def failed(engine: Engine, ids: list[int]) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET status = 'failed', finished_at = now(), "
                'error = \'{"type": "RuntimeError"}\' WHERE id = ANY(:ids)'
            ),
            {"ids": ids},
        )


def statuses(engine: Engine, ids: list[int]) -> list[str]:
    return [snapshot(engine, i).status for i in ids]


def test_a_dry_run_counts_and_samples_and_the_real_run_acts_on_the_match_only(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as s, s.begin():
        greets = [durable.insert(s, Greet, args={"who": str(n)}) for n in range(5)]
        gates = [durable.insert(s, Gate) for _ in range(2)]
        elsewhere = durable.insert(s, Greet, args={}, queue="other")
    failed(engine, [*greets, *gates, elsewhere])
    args = ["retry", "--class", Greet.name, "--status", "failed", "--queue", "default"]
    dry = cli(*args, "--dry-run", dsn=db_url)
    assert dry.returncode == 0, dry.stderr
    sample = ", ".join(map(str, greets))
    assert dry.stdout.strip() == f"would retry 5 instance(s) (ids up to {greets[-1]}); " + (
        f"for example: {sample}"
    )
    assert as_json(cli(*args, "--dry-run", "--json", dsn=db_url)) == {
        "count": 5,
        "bound": greets[-1],
        "sample": greets,
    }
    assert set(statuses(engine, greets)) == {"failed"}  # a dry run acts on nothing

    done = cli(*args, "--batch", "2", "--actor", "oncall", dsn=db_url)
    assert done.returncode == 0, done.stderr
    [audit] = as_json(cli("audit", "--action", "bulk_retry", "--json", dsn=db_url))
    assert done.stdout.strip() == f"retried 5 instance(s); audit id {audit['id']}"
    assert audit["actor"] == "oncall" and audit["details"]["done"] == 5
    assert set(statuses(engine, greets)) == {"available"}
    assert set(statuses(engine, [*gates, elsewhere])) == {"failed"}
    [row] = as_json(cli("audit", "--target", str(greets[3]), "--json", dsn=db_url))
    assert (row["action"], row["actor"]) == ("retry", "oncall")

    nothing = cli("cancel", "--correlation-key-prefix", "no-such:", dsn=db_url)
    assert nothing.stdout.strip() == "would cancel 0 instance(s)"


def test_a_bulk_run_draws_a_progress_bar_on_a_terminal(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Gate.new() for _ in range(4)])
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gen_durable", "cancel", "--class", Gate.name, "--batch", "1"],
        env=env,
        cwd=TESTS,
        stdin=subprocess.DEVNULL,  # not a terminal: no confirmation asked
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end closed: the process is done writing
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    shown = drawn.decode()
    assert "cancel #" in shown and "4/4" in shown, shown
    assert "cancelled 4 instance(s)" in shown


def test_an_interrupted_bulk_action_resumes_from_the_command_line(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Gate.new() for _ in range(3)])
    where = BulkFilter(class_name=Gate.name)
    with engine.begin() as conn:
        preview = bulk_preview(conn, "cancel", where)
        action = bulk_start(conn, "cancel", where, bound=preview.bound, expected=3, actor="a")
    with engine.begin() as conn:
        bulk_step(conn, action, batch=1)  # the first batch committed, then it stopped
    with Session(engine) as s, s.begin():
        later = durable.insert(s, Gate)  # beyond the bound
    out = cli("cancel", "--resume", str(action), "--json", dsn=db_url)
    assert as_json(out) == {"audit_id": action, "done": 3, "skipped": 0}
    assert statuses(engine, [*ids, later]) == ["cancelled"] * 3 + ["available"]


def test_bulk_mistakes_are_usage_errors(db_url: str) -> None:
    for args in (
        ["cancel"],  # neither ids nor a filter
        ["cancel", "1", "--class", Gate.name],  # both
        ["cancel", "--status", "done"],  # cancel acts on unfinished ones only
        ["retry", "--status", "running"],
        ["retry", "--older-than", "-5"],
        ["retry", "--class", ""],
        ["cancel", "1", "--dry-run"],
        ["retry", "--resume", "0"],
    ):
        assert_short_failure(cli(*args, dsn=db_url), 2)
    [line] = assert_short_failure(cli("retry", "--resume", "999", dsn=db_url), 1)
    assert line == "Error: NotFound: no bulk retry has audit id 999"


def test_several_ids_and_a_prune_dry_run(engine: Engine, db_url: str) -> None:
    with Session(engine) as s, s.begin():
        a, b = durable.insert(s, Gate), durable.insert(s, Gate)
    out = cli("cancel", str(a), str(b), dsn=db_url)
    assert out.stdout.splitlines() == [f"{a}: cancelled", f"{b}: cancelled"]
    assert cli("cancel", str(a), dsn=db_url).stdout.strip().startswith("already finished")
    dry = cli("prune", "--older-than", "0", "--dry-run", dsn=db_url)
    assert dry.stdout.strip() == "would prune 2 finished instance(s)"
    assert statuses(engine, [a, b]) == ["cancelled", "cancelled"]
    with engine.connect() as conn:
        assert store.audit.listing(conn, action="prune") == []
    assert cli("prune", "--older-than", "0", dsn=db_url).stdout.strip() == (
        "pruned 2 finished instance(s)"
    )


def test_workers_queues_and_a_pause_nobody_serves(engine: Engine, db_url: str) -> None:
    with engine.begin() as conn:
        for node, beat in (("live-1", 600.0), ("dead-1", 600.0)):  # stale after 30 min
            store.maintenance.upsert_node(
                conn, node, "h", 1, {"default": 2}, [], None, heartbeat_interval=beat
            )
        conn.execute(
            text(
                "UPDATE gen_durable.gd_nodes SET heartbeat_at = now() - interval '1 hour' "
                "WHERE id = 'dead-1'"
            )
        )
    with Session(engine) as s, s.begin():
        durable.insert(s, Greet, args={})
    listed = {w["id"]: w for w in as_json(cli("workers", "--json", dsn=db_url))}
    assert (listed["live-1"]["stale"], listed["dead-1"]["stale"]) == (False, True)
    assert listed["live-1"]["heartbeat_interval"] == 600.0
    table = cli("workers", dsn=db_url).stdout
    assert "STALE" in next(line for line in table.splitlines() if "dead-1" in line)
    assert "(every 600s)" in table

    [default] = as_json(cli("queues", "--json", dsn=db_url))
    assert (default["name"], default["counts"], default["served"]) == (
        "default",
        {"available": 1},
        True,
    )
    paused = cli("pause", "defualt", dsn=db_url)
    assert paused.returncode == 0
    assert paused.stdout.splitlines() == [
        "queue 'defualt' paused",
        "note: no live runner serves queue 'defualt' (a misspelt name?)",
    ]
    assert cli("pause", "default", dsn=db_url).stdout.splitlines() == ["queue 'default' paused"]
    table = cli("queues", dsn=db_url).stdout.splitlines()
    assert table[0].split() == ["NAME", "PAUSED", "LIMIT", "DEPTH", "OLDEST_WAITING", "SERVED"]
    assert "NO LIVE RUNNER" in next(line for line in table if line.startswith("defualt"))


@pytest.mark.parametrize(
    "args",
    [
        ["queues"],
        ["cancel", "--class", "x.Y", "--dry-run"],
        ["retry", "--status", "failed"],
        ["retry", "--resume", "1"],
        ["prune", "--dry-run"],
        ["why", "1"],
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_a_missing_schema_is_one_line(empty_db_url: str, args: list[str]) -> None:  # noqa: F811
    [line] = assert_short_failure(cli(*args, dsn=empty_db_url), 1)
    assert "schema 'gen_durable' is not installed" in line


def test_ctrl_c_in_a_bulk_run_keeps_the_committed_batches_and_says_how_to_resume(
    engine: Engine, db_url: str
) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Gate.new() for _ in range(4)])
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": db_url}
    args = ["cancel", "--class", Gate.name, "--batch", "1", "--actor", "ops"]
    with engine.connect() as blocker, blocker.begin():
        # The third row is locked: the run commits two batches and waits in the third.
        blocker.execute(
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :id FOR UPDATE"),
            {"id": ids[2]},
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "gen_durable", *args],
            env=env,
            cwd=TESTS,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        backend_waiting_on_lock(engine, timeout=60)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    [audit] = as_json(cli("audit", "--action", "bulk_cancel", "--json", dsn=db_url))
    assert err.strip().splitlines()[-1] == (
        f"interrupted: go on with gen-durable cancel --resume {audit['id']}"
    )
    assert statuses(engine, ids) == ["cancelled"] * 2 + ["available"] * 2
    resumed = cli("cancel", "--resume", str(audit["id"]), dsn=db_url)
    assert resumed.stdout.strip() == f"cancelled 4 instance(s); audit id {audit['id']}"
    assert statuses(engine, ids) == ["cancelled"] * 4
    for i in ids:  # each cancelled once
        assert [
            r["action"] for r in as_json(cli("audit", "--target", str(i), "--json", dsn=db_url))
        ] == ["cancel"]
