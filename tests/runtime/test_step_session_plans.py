"""Regression: a step that writes through ``ctx.session`` commits its transition with the
generic plan, never planning the UPDATE anew for its one row.

Each such step commits one transition on whichever pooled connection its session got.
PostgreSQL plans a prepared statement anew for each of its first five executions on a
connection and keeps doing so while that custom plan looks cheaper than the generic
one — which it did for one row: about 350 µs of the server's CPU per step went to
planning, twice what running the statement took. The step's commit now asks for the
generic plan (``plan_cache_mode``, for its transaction only), as the claims do.

The evidence is PostgreSQL's own count of each prepared statement's plans
(``pg_prepared_statements``), read on every connection of the Runner's pool afterwards.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Next, Runner

STEPS = ("a", "b", "c", "d", "e", "f")
INSTANCES = 8


class Writes(FSM):
    """Steps that each open ``ctx.session`` (so each commits in a transaction of its own)."""

    name = "plans.Writes"
    steps = STEPS

    def step(self, name: str, ctx: durable.Context) -> Next | Done:
        ctx.session.execute(text("SELECT 1"))
        if name == STEPS[-1]:
            return Done()
        return Next(STEPS[STEPS.index(name) + 1])


def _plans_of_the_transition_update(engine: Engine) -> tuple[int, int]:
    """(custom plans, generic plans) of the transition's UPDATE over every pooled
    connection (each connection has prepared statements of its own)."""
    pooled = engine.pool.checkedin()  # type: ignore[attr-defined]
    connections = [engine.connect() for _ in range(pooled)]
    custom = generic = 0
    try:
        for conn in connections:
            row = conn.execute(
                text(
                    "SELECT coalesce(sum(custom_plans), 0), coalesce(sum(generic_plans), 0) "
                    "FROM pg_prepared_statements WHERE statement LIKE 'WITH locked AS%'"
                )
            ).one()
            custom += row[0]
            generic += row[1]
    finally:
        for conn in connections:
            conn.close()
    return custom, generic


def test_session_steps_commit_their_transitions_with_the_generic_plan(engine: Engine) -> None:
    steps = INSTANCES * len(STEPS)
    committed: list[durable.StepReport] = []
    all_done = threading.Event()

    def observe(report: durable.StepReport) -> None:
        if report.committed and report.fsm == Writes.name:
            committed.append(report)
            if len(committed) == steps:
                all_done.set()

    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Writes.new() for _ in range(INSTANCES)])
    # Waited for with an observer: a read that ends in a rollback would make psycopg
    # deallocate the prepared statements of the connection it ran on.
    with Runner(engine, queues={"default": 2}, observer=observe, gc_interval=3600.0):
        assert all_done.wait(60), f"{len(committed)} of {steps} steps committed"
    custom, generic = _plans_of_the_transition_update(engine)
    # Without the generic plan, the first five executions on each connection are custom
    # plans at least. (A count can only be lost, never added: a rollback on a pooled
    # connection would make psycopg deallocate its statements, counts included.)
    assert custom == 0, f"the transition's UPDATE was planned anew {custom} times"
    assert 0 < generic <= steps, f"{generic} of {steps} transitions used the generic plan"
