"""Serialization failures and deadlocks on the hot statements; errors that are not the
database's in the commit path."""

from __future__ import annotations

import time
from typing import Any

import pytest
from _support.helpers import snapshot, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from chaos.harness import Cluster, Sender, Workload, tier, value, verify, wait_finished
from chaos.worker import raised_by_postgres
from gen_durable import FSM, Done, Next, Runner, faults

pytestmark = pytest.mark.chaos

HOT = ";".join(
    [
        "claim:raise=deadlock:p=0.05",
        "commit:raise=serialization:p=0.05",
        "spawn_commit:raise=deadlock:p=0.3",
        "heartbeat:raise=serialization:p=0.3",
        "reaper:raise=deadlock:p=0.3",
    ]
)
"""Each rule makes PostgreSQL raise the error inside the statement's transaction."""


def test_serialization_failures_and_deadlocks_on_hot_statements(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any]
) -> None:
    """PostgreSQL raises serialization failures (40001) and deadlocks (40P01) inside the
    claim, the step commits (grouped and through ``ctx.session``), Spawn commits, the
    heartbeat and the reaper, at random.

    Every one is retried — the transaction rolled back, nothing half-written — and nothing
    is lost: every instance finishes, each transition commits once.
    """
    count = tier(150, 1500)
    workload = Workload()
    workload.add(chaos_engine, count, wait_every=5, spawn_every=5, children=2)
    started = time.monotonic()
    workers = cluster.start_many(2, HOT, env={"GD_CHAOS_STEP_SECONDS": "0.02"})
    sender = Sender(chaos_engine, workload.keys(workload.wait), spread=0.02)
    sender.start()
    sender.finish()
    wait_finished(chaos_engine, workload)
    elapsed = time.monotonic() - started
    fired: dict[str, int] = {}
    for worker in workers:
        for rule, counts in cluster.stop(worker).items():
            fired[rule] = fired.get(rule, 0) + counts["fired"]
    verdict = verify(chaos_engine, workload)
    figures.update(
        {
            "instances": count,
            "seconds": round(elapsed, 1),
            "errors_injected": sum(fired.values()),
            **{f"injected_{rule.split(':')[0]}": n for rule, n in sorted(fired.items())},
            **{k: v for k, v in verdict.figures.items() if k not in ("instances", "steps")},
        }
    )
    verdict.assert_ok()
    assert fired.get("commit:raise", 0) > 0 and fired.get("claim:raise", 0) > 0


class Twice(FSM):
    name = "chaos.Twice"
    steps = ("a", "b")

    def a(self, ctx: durable.Context) -> Next:
        return Next("b")

    def b(self, ctx: durable.Context) -> Done:
        return Done()


def test_an_error_that_is_not_the_databases_does_not_kill_the_committer(
    engine: Engine,
) -> None:
    """A commit that fails with an error that is not a database error (here injected; in
    life, a value the driver cannot bind) fails only its own steps: they run again once
    their leases expire, and the committer goes on committing everybody else's."""
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Twice.new() for _ in range(20)])
    rule = faults.Rule("commit", "raise", count=2)  # the group's commit, then one alone
    with (
        faults.inject(rule),
        Runner(engine, queues={"default": 4}, lease=1.0, poll_interval=0.1, grace=1.0),
    ):
        _wait_done(engine, ids)
    assert rule.fired == 2


class Poisoned(durable.Job):
    name = "chaos.Poisoned"

    def perform(self, args: Any) -> str:
        return "poison" if args["poison"] else "ok"


def test_a_permanent_database_error_fails_its_steps_not_the_committer(engine: Engine) -> None:
    """A transition the database refuses every time (here a CHECK constraint the test adds;
    in life a value a column refuses, or a missing grant) is not retried forever, which
    held every later commit of the runner: the group is committed one transition at a
    time, only the refused one fails (and runs again once its lease expires), and every
    other step commits."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "ALTER TABLE gen_durable.gd_instances ADD CONSTRAINT test_no_poison "
                "CHECK (result IS DISTINCT FROM '\"poison\"'::jsonb)"
            )
        )
    with Session(engine) as s, s.begin():
        poison = durable.insert(s, Poisoned, args={"poison": True})
        ids = durable.insert_all(s, [Poisoned.new(args={"poison": False}) for _ in range(30)])
    with Runner(engine, queues={"default": 4}, lease=1.0, poll_interval=0.1, grace=1.0):
        _wait_done(engine, ids)
    assert snapshot(engine, poison).status != "done"


class Writes(FSM):
    """One step that writes through ``ctx.session``."""

    name = "chaos.Writes"
    steps = ("write",)

    def write(self, ctx: durable.Context) -> Done:
        ctx.session.execute(text("SELECT 1"))
        return Done()


def test_a_serialization_failure_at_a_session_commit_is_retried_at_once(
    engine: Engine,
) -> None:
    """PostgreSQL refuses the commit of a step that wrote through ``ctx.session`` with a
    serialization failure: the step should be retried like a step that raised (its writes
    rolled back, a retry committed), not left running until its lease expires."""
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Writes)
    rule = faults.Rule("commit", "raise", count=1, error=raised_by_postgres("40001"))
    runner = Runner(engine, queues={"default": 1}, lease=120.0, poll_interval=0.1, grace=0.5)
    with faults.inject(rule), runner:
        wait_until(lambda: rule.fired == 1 and len(runner.inflight) == 0, 60)
        status = snapshot(engine, iid).status
    assert status != "running", "its lease is held by no runner"


def _wait_done(engine: Engine, ids: list[int]) -> None:
    """Wait until every one of ``ids`` is done."""
    sql = "SELECT count(*) FROM gen_durable.gd_instances WHERE id = ANY(:ids) AND status = 'done'"
    wait_until(lambda: value(engine, sql, ids=ids) == len(ids), 60)
