"""``gen-durable run --processes N`` through its real entry point: a supervisor and its
runner processes, killed and stopped for real.

Interleavings are forced by waiting on what the processes did (rows in the database,
node rows, log lines), never by sleeping; no timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.helpers import TESTS, count, snapshot, wait_status, wait_until
from click.testing import CliRunner
from procs.supervised_app import Gated, open_gate, setup
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable.cli import main

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gen_durable", *args]


def environment(dsn: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": dsn, **extra}


class Supervised:
    """``gen-durable run --processes ...`` in the background; its stderr goes to a file."""

    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                command("run", "--import", "procs.supervised_app", "-v", *args),
                env=environment(dsn),
                cwd=TESTS,
                stderr=sink,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # its children notice their supervisor is gone and stop
        self.proc.wait(30)


@pytest.fixture
def started(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[list[Supervised]]:
    setup(engine)
    running: list[Supervised] = []
    yield running
    for supervised in running:
        supervised.stop()


def supervise(started: list[Supervised], db_url: str, tmp_path: Path, *args: str) -> Supervised:
    supervised = Supervised(db_url, tmp_path / f"supervisor-{len(started)}.log", *args)
    started.append(supervised)
    return supervised


def insert_gated(engine: Engine, n: int) -> list[int]:
    with Session(engine) as s, s.begin():
        return [durable.insert(s, Gated, state={"n": i}) for i in range(n)]


def working_pids(engine: Engine) -> dict[int, set[int]]:
    """Process id -> the instances whose ``work`` step it started."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT pid, instance_id FROM sup_runs WHERE step = 'work'"))
        out: dict[int, set[int]] = {}
        for pid, iid in rows:
            out.setdefault(pid, set()).add(iid)
        return out


def holding_every_slot(engine: Engine) -> dict[int, set[int]]:
    """Both children (two slots each) hold two ``work`` steps at the gate, else nothing."""
    holding = working_pids(engine)
    full = len(holding) == 2 and all(len(iids) == 2 for iids in holding.values())
    return holding if full else {}


def nodes(engine: Engine) -> list[tuple[str, str | None, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, supervisor, pid FROM gen_durable.gd_nodes"))
        return [(r.id, r.supervisor, r.pid) for r in rows]


def runs(engine: Engine, iid: int, step: str) -> int:
    return count(
        engine, "SELECT count(*) FROM sup_runs WHERE instance_id = :i AND step = :s", i=iid, s=step
    )


def effects(engine: Engine, iid: int) -> list[str]:
    with engine.connect() as conn:
        sql = "SELECT step FROM sup_effects WHERE instance_id = :i ORDER BY version"
        return list(conn.execute(text(sql), {"i": iid}).scalars())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_child_killed_mid_step_is_restarted_and_no_work_is_lost(
    engine: Engine, db_url: str, tmp_path: Path, started: list[Supervised]
) -> None:
    ids = insert_gated(engine, 6)
    supervised = supervise(
        started, db_url, tmp_path, "--processes", "2", "--queues", "default=4", "--lease", "1",
        "--poll-interval", "0.2", "--grace", "5",
    )  # fmt: skip
    # Both children hold two steps each at the gate (6 instances, 4 slots in all), so
    # what the victim was running is known.
    holding = wait_until(lambda: holding_every_slot(engine), timeout=60)
    registered = wait_until(lambda: len(n := nodes(engine)) == 2 and n)
    [supervisor] = {sup for _, sup, _ in registered}
    assert supervisor is not None and {pid for _, _, pid in registered} == set(holding)
    victim = min(holding)
    os.kill(victim, signal.SIGKILL)

    def restarted() -> set[int]:
        pids = {pid for _, sup, pid in nodes(engine) if sup == supervisor}
        return pids if len(pids) == 2 and victim not in pids else set()

    fresh = wait_until(restarted, timeout=60) - set(holding)
    assert len(fresh) == 1 and not alive(victim)
    open_gate(engine)
    for n, iid in enumerate(ids):
        assert wait_status(engine, iid, "done", timeout=60).result == n * 2
    for iid in ids:
        assert effects(engine, iid) == ["work", "finish"]  # each transition committed once
        assert runs(engine, iid, "work") == (2 if iid in holding[victim] else 1)
    listed = CliRunner().invoke(main, ["workers", "--json", "--dsn", db_url])
    assert listed.exit_code == 0, listed.output
    workers = json.loads(listed.stdout)
    assert sorted(w["pid"] for w in workers) == sorted(set(holding) - {victim} | fresh)
    assert {w["supervisor"] for w in workers} == {supervisor}
    table = CliRunner().invoke(main, ["workers", "--dsn", db_url])
    assert table.exit_code == 0 and table.output.count(supervisor) == 2, table.output
    assert supervised.proc.poll() is None
    supervised.proc.send_signal(signal.SIGTERM)
    assert supervised.proc.wait(60) == 0
    assert "restarting it in" in supervised.output()


def test_sigterm_drains_every_child_and_the_supervisor_exits_0(
    engine: Engine, db_url: str, tmp_path: Path, started: list[Supervised]
) -> None:
    ids = insert_gated(engine, 6)
    supervised = supervise(
        started, db_url, tmp_path, "--processes", "2", "--queues", "default=4", "--grace", "60",
        "--poll-interval", "0.2",
    )  # fmt: skip
    holding = wait_until(lambda: holding_every_slot(engine), timeout=60)
    wait_until(lambda: len(nodes(engine)) == 2)
    in_flight = set().union(*holding.values())
    supervised.proc.send_signal(signal.SIGTERM)
    # Both children stopped claiming; only then do their steps in flight go on.
    wait_until(lambda: supervised.output().count("signal received, draining") == 2, timeout=30)
    open_gate(engine)
    assert supervised.proc.wait(60) == 0
    for iid in ids:
        snap = snapshot(engine, iid)
        if iid in in_flight:  # drained: its step finished and committed during the grace
            assert (snap.status, snap.step, snap.attempt) == ("available", "finish", 0)
            assert effects(engine, iid) == ["work"]
        else:  # never claimed once the children were asked to stop
            assert (snap.status, snap.step) == ("available", "work")
            assert runs(engine, iid, "work") == 0
    assert nodes(engine) == []  # each child removed its own row: a clean stop
    assert not any(alive(pid) for pid in holding)


def test_children_that_keep_dying_make_the_supervisor_exit_1(
    engine: Engine, db_url: str, started: list[Supervised]
) -> None:
    out = subprocess.run(
        command("run", "--import", "procs.supervised_app", "--processes", "2", "--queues",
                "default=2", "--max-restarts", "1"),
        env=environment(db_url, GD_TEST_CHILD_DIES="1"), capture_output=True, text=True,
        timeout=120, cwd=TESTS,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("restarting it in") == 1, out.stderr  # then the second death
    assert "giving up" in out.stderr
    assert nodes(engine) == []


def test_a_child_that_cannot_start_for_its_configuration_exits_1_without_restarts(
    db_url: str,
) -> None:
    out = subprocess.run(
        command("run", "--import", "procs.supervised_app", "--processes", "2", "--queues",
                "default=2"),
        env=environment(db_url, GD_TEST_CHILD_REFUSES="1"), capture_output=True, text=True,
        timeout=120, cwd=TESTS,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "this child's configuration is refused" in out.stderr
    assert "restarting" not in out.stderr


def test_an_unreachable_database_exits_3_with_or_without_processes() -> None:
    for extra in ((), ("--processes", "2")):
        out = subprocess.run(
            command("run", "--import", "procs.supervised_app", "--queues", "default=2", *extra),
            env=environment(UNREACHABLE), capture_output=True, text=True, timeout=60, cwd=TESTS,
        )  # fmt: skip
        assert out.returncode == 3, out.stderr
        assert "cannot connect" in out.stderr
