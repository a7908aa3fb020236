"""Rolling deploys: old and new runners side by side (two processes) never run what they
cannot understand; renamed and removed steps; moving a stranded instance; the dry run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _support.helpers import RunnerProcesses, count, wait_until
from deploys import approve, cli, cli_json, deploy, insert, row
from sqlalchemy import Engine, text
from upgrades.upgrade_worker import SETUP

import gen_durable as durable
from gen_durable import store, testing
from gen_durable.domain import versioning


def at(engine: Engine, instance_id: int, status: str, step: str) -> bool:
    now = row(engine, instance_id)
    return (now.status, now.step) == (status, step)


def announce(engine: Engine, node: str, cls: type) -> None:
    """A live runner's node row, as a runner of ``cls``'s code writes it."""
    with engine.begin() as conn:
        store.maintenance.upsert_node(
            conn, node, "host", 1, {"default": 1}, [cls.name], None, known=versioning.known([cls])
        )


@pytest.fixture
def runners(db_url: str, engine: Engine) -> Iterator[RunnerProcesses]:
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)
    procs = RunnerProcesses("upgrades.upgrade_worker", db_url)
    yield procs
    procs.stop_all()


def test_old_and_new_runners_side_by_side(engine: Engine, runners: RunnerProcesses) -> None:
    v1 = deploy(1)
    early = insert(engine, v1, "ann@example.com")
    old = runners.start("--version", "1")
    wait_until(lambda: at(engine, early, "awaiting", "review"))
    # The new code's rows, then an old one behind them in the queue: once the old runner
    # took the later row, it has passed over the earlier new ones.
    v2 = deploy(2)
    new_rows = [insert(engine, v2, f"n{i}@example.com", handle=f"n{i}") for i in range(3)]
    v1 = deploy(1)
    behind = insert(engine, v1, "bob@example.com")
    wait_until(lambda: at(engine, behind, "awaiting", "review"))
    assert all(at(engine, i, "available", "start") for i in new_rows)
    with engine.connect() as conn:
        why = durable.explain(conn, new_rows[0])
        known = conn.execute(text("SELECT known FROM gen_durable.gd_nodes")).scalar_one()
    assert why.reason == "unknown_version"
    assert "no live runner knows version 2 of upg.Signup's state" in why.summary
    assert known == {"upg.Signup": {"versions": [1], "steps": ["start", "review", "finish"]}}

    new = runners.start("--version", "2")
    for i in new_rows:
        wait_until(lambda i=i: at(engine, i, "awaiting", "check"))
    for i in [early, behind, *new_rows]:
        approve(engine, i)
    for i in [early, behind, *new_rows]:
        wait_until(lambda i=i: row(engine, i).status == "done", timeout=60)
    with engine.connect() as conn:
        for i in new_rows:
            assert durable.get(conn, i).result["by"] == "v2"
    # Every step of a version-2 row ran on the new runner.
    ran_by_old = count(
        engine,
        "SELECT count(*) FROM gd_test_runs WHERE instance_id = ANY(:ids) AND pid = :pid",
        ids=new_rows,
        pid=old.pid,
    )
    assert ran_by_old == 0
    assert count(engine, "SELECT count(*) FROM gd_test_runs WHERE pid = :p", p=new.pid) >= 6


def test_a_removed_step_strands_the_row_until_an_operator_moves_it(
    engine: Engine, db_url: str
) -> None:
    v1 = deploy(1)
    iid = insert(engine, v1, "cy@example.com")
    testing.drain(engine, fsms=[v1.name])
    approve(engine, iid)  # runnable at "review", which version 3 neither has nor aliases
    v3 = deploy(3)
    announce(engine, "new-runner", v3)
    assert [r for r in testing.drain(engine, fsms=[v3.name]) if r.instance_id == iid] == []
    assert at(engine, iid, "available", "review")  # never run, never discarded
    with engine.connect() as conn:
        why = durable.explain(conn, iid)
    assert why.reason == "unknown_step" and f"gen-durable move {iid}" in why.summary
    code, listed = cli_json(db_url, "ls", "--stuck")
    assert code == 0 and [r["id"] for r in listed] == [iid]

    wrong = cli(db_url, "move", str(iid), "--to", "nowhere")
    assert wrong.returncode == 1 and "nowhere" in wrong.stderr
    moved = cli(db_url, "move", str(iid), "--to", "check", "--actor", "ops")
    assert moved.returncode == 0, moved.stderr
    with engine.connect() as conn:
        audit = conn.execute(
            text("SELECT action, actor, details FROM gen_durable.gd_audit WHERE instance_id = :i"),
            {"i": iid},
        ).one()
    assert tuple(audit) == ("move", "ops", {"from": "review", "to": "check"})
    testing.drain(engine, fsms=[v3.name])
    assert row(engine, iid).status == "done"
    assert cli_json(db_url, "ls", "--stuck")[1] == []


def test_the_dry_run_reports_and_gates(engine: Engine, db_url: str) -> None:
    v1 = deploy(1)
    waiting = insert(engine, v1, "dee@example.com")
    testing.drain(engine, fsms=[v1.name])
    approve(engine, waiting)  # runnable at the old step "review"
    fresh = insert(engine, v1, "eve@example.com")
    v2 = "upgrades.signup_v2"
    code, report = cli_json(db_url, "check-upgrade", "--import", v2)
    assert code == 0 and report["ok"] is True
    [signup] = report["classes"]
    assert signup["fsm"] == "upg.Signup" and signup["rows"] == 2
    assert signup["steps"]["review"]["upgrade"] == 1 and signup["steps"]["start"]["upgrade"] == 1

    broken = insert(engine, v1, "broken@example.com")
    code, report = cli_json(db_url, "check-upgrade", "--import", v2)
    start = report["classes"][0]["steps"]["start"]
    assert code == 1 and report["ok"] is False
    assert (start["upgrade"], start["fail"]) == (1, 1)
    assert start["errors"][0]["id"] == broken
    assert "cannot derive a handle" in start["errors"][0]["error"]
    # A sample: the oldest row only.
    assert cli_json(db_url, "check-upgrade", "--import", v2, "--limit", "1")[0] == 0

    code, report = cli_json(db_url, "check-upgrade", "--import", "upgrades.signup_v3")
    assert code == 1 and report["classes"][0]["steps"]["review"]["stranded"] == 1
    plain = cli(db_url, "check-upgrade", "--import", "upgrades.signup_v3")
    assert plain.returncode == 1 and "1 stranded" in plain.stdout
    # Nothing changed.
    assert {row(engine, i).state_version for i in (waiting, fresh, broken)} == {1}
    unreachable = cli("postgresql://nobody@127.0.0.1:1/none", "check-upgrade", "--import", v2)
    assert unreachable.returncode == 3, unreachable.stderr
    nothing = cli(db_url, "check-upgrade")
    assert nothing.returncode == 2 and "pass --import MODULE" in nothing.stderr
