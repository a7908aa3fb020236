"""Versioned state: old code writes rows, new code runs them (upgraded on load and
written back in its version); new rows carry the code's version; an eager upgrade in
batches skips what runners hold; a failing upgrade parks its row, visibly."""

from __future__ import annotations

from deploys import approve, cli, deploy, insert, row
from sqlalchemy import Engine, text

import gen_durable as durable
from gen_durable import store, testing


def test_old_rows_are_upgraded_on_load_and_written_back(engine: Engine) -> None:
    old = deploy(1)
    parked = insert(engine, old, "ann@example.com")
    fresh = insert(engine, old, "bob@example.com")
    testing.drain(engine, fsms=[old.name])  # both park at the old step "review"
    never_run = insert(engine, old, "cy@example.com")
    assert row(engine, parked).step == "review"
    assert row(engine, parked).state_version == 1

    new = deploy(2)
    assert row(engine, insert(engine, new, "dee@example.com", handle="dee")).state_version == 2
    approve(engine, parked)
    testing.drain(engine, fsms=[new.name])
    # The awaited row ran its renamed step's successor, with the upgraded state.
    done = durable.get(engine.connect(), parked)
    assert done.status == "done"
    assert done.result == {"email": "ann@example.com", "handle": "ann", "by": "v2"}
    # The row never claimed before runs the new code from its start, upgraded too.
    after = row(engine, never_run)
    assert (after.step, after.state_version) == ("check", 2)
    assert after.state == {"email": "cy@example.com", "handle": "cy"}
    # The row still awaiting under the old step name is untouched until it runs.
    waiting = row(engine, fresh)
    assert (waiting.status, waiting.step, waiting.state_version) == ("awaiting", "review", 1)
    approve(engine, fresh)
    testing.drain(engine, fsms=[new.name])
    assert durable.get(engine.connect(), fresh).result["handle"] == "bob"


def test_a_step_that_fails_keeps_the_old_json_and_version(engine: Engine) -> None:
    old = deploy(1)
    iid = insert(engine, old, "eve@example.com")
    new = deploy(2)

    def boom(self: object, ctx: durable.Context) -> None:
        raise RuntimeError("the step failed")

    new.start = boom  # type: ignore[attr-defined]
    testing.drain(engine, fsms=[new.name])
    failed_once = row(engine, iid)
    assert failed_once.status == "scheduled" and failed_once.attempt == 1
    assert (failed_once.state, failed_once.state_version) == ({"email": "eve@example.com"}, 1)


def test_a_failing_upgrade_parks_the_row_until_fixed_code_upgrades_it(
    engine: Engine, db_url: str
) -> None:
    old = deploy(1)
    bad = insert(engine, old, "broken@example.com")
    good = insert(engine, old, "fay@example.com")
    new = deploy(2)
    reports = testing.drain(engine, fsms=[new.name])
    parked = row(engine, bad)
    # Old JSON and version kept, unfinished, out of every claim, the error stored.
    assert (parked.status, parked.run_at, parked.step) == ("scheduled", None, "start")
    assert (parked.state, parked.state_version) == ({"email": "broken@example.com"}, 1)
    assert parked.error["type"] == "StateUpgradeFailed"
    assert "cannot derive a handle" in parked.error["message"]
    assert parked.attempt == 0  # no attempt used: the step never ran
    assert [r.step for r in reports if r.instance_id == bad] == ["start"]
    assert row(engine, good).step == "check"
    # Not reclaimed: draining again runs nothing of it.
    assert [r for r in testing.drain(engine, fsms=[new.name]) if r.instance_id == bad] == []
    with engine.connect() as conn:
        why = durable.explain(conn, bad)
    assert why.reason == "upgrade_failed"
    assert "cannot derive a handle" in why.summary and "upgrade-state" in why.summary
    shown = cli(db_url, "show", str(bad))
    assert "StateUpgradeFailed" in shown.stdout, shown.stderr
    stuck = cli(db_url, "ls", "--stuck")
    assert str(bad) in stuck.stdout.split() and str(good) not in stuck.stdout.split()

    # The same code cannot upgrade it eagerly either: exit 1, the row unchanged.
    again = cli(db_url, "upgrade-state", "upg.Signup", "--import", "upgrades.signup_v2")
    assert again.returncode == 1, again.stderr
    assert row(engine, bad).state_version == 1
    # Fixed code (version 3) upgrades it: runnable again, and it runs to the end.
    fixed = cli(db_url, "upgrade-state", "upg.Signup", "--import", "upgrades.signup_v3")
    assert fixed.returncode == 0, fixed.stderr
    assert "1 row(s) upgraded" in fixed.stdout
    now = row(engine, bad)
    assert (now.status, now.error, now.state_version) == ("available", None, 2)
    assert now.state == {"email": "broken@example.com", "handle": "fixed"}
    v3 = deploy(3)
    testing.drain(engine, fsms=[v3.name])
    approve(engine, bad)
    testing.drain(engine, fsms=[v3.name])
    assert durable.get(engine.connect(), bad).result["by"] == "v3"


def test_eager_upgrade_in_batches_skips_rows_a_runner_holds(engine: Engine, db_url: str) -> None:
    old = deploy(1)
    ids = [insert(engine, old, f"u{i}@example.com") for i in range(7)]
    held = ids[3]
    with engine.begin() as conn:  # a runner's claim: the first row is running
        [running] = store.claims.claim(conn, "default", [old.name], 1, "runner", 60, None)
    assert running.id == ids[0]
    with engine.connect() as holder:
        # A runner's claim or commit holds this row's lock: the upgrade must not wait.
        holder.execute(
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": held}
        )
        done = cli(
            db_url, "upgrade-state", "upg.Signup", "--import", "upgrades.signup_v2", "--batch", "2"
        )
        holder.rollback()
    assert done.returncode == 0, done.stderr
    assert "5 row(s) upgraded to state version 2" in done.stdout
    assert "2 still older" in done.stdout
    versions = {i: row(engine, i).state_version for i in ids}
    assert versions == {i: (1 if i in (held, ids[0]) else 2) for i in ids}
    assert row(engine, ids[1]).state == {"email": "u1@example.com", "handle": "u1"}
    # The row it skipped is upgraded on load by the new code, like any other.
    new = deploy(2)
    testing.drain(engine, fsms=[new.name])
    assert row(engine, held).state_version == 2
