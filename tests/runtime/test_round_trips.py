"""Regression guards: the statements and round trips a step costs do not grow.

Counts, never times. Statements are counted with SQLAlchemy's ``before_cursor_execute``
on the Runner's engine, BEGIN/COMMIT/ROLLBACK (each a round trip of psycopg's own) with
its transaction events — only on the Runner's per-step threads (dispatcher, workers,
committer, notifier); the maintenance services run per interval, not per step.

- At concurrency 1 nothing is batched: every step is one claim and one commit of its own,
  so the count per step is exact (give or take the debounced wake-up notifications), and
  a statement added anywhere on the path shows.
- At concurrency 10 claims and commits are batched; the amortised count stays under the
  unbatched one.
- The claim and the grouped commit send as many statements for 50 rows as for one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _support.helpers import transition_for
from _support.sqlwatch import StatementCounter
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Next, Runner, store

# The budgets: what one unbatched step may cost, with no slack for another statement.
# Claim: the pick loop's claim at once, one statement (the counter also counts the
# begin and commit of its block, though psycopg sends neither for it); commit:
# lock_timeout, the fenced UPDATE (2 statements, BEGIN, COMMIT); at most one wake-up
# NOTIFY per step (debounced: usually far fewer). Claims taken ahead make the measured
# figures lower still (about 1.2 statements and 2.8 round trips a step at concurrency 1).
STATEMENTS_PER_STEP = 4.0
ROUND_TRIPS_PER_STEP = 8.0
COMMITS_PER_STEP = 2.0
BATCHED_STATEMENTS_PER_STEP = 3.0


class Nop(Job):
    name = "rt.Nop"

    def perform(self, args: Any) -> None:
        return None


class Steps(FSM):
    """Five no-op steps, then done."""

    name = "rt.Steps"
    steps = ("a", "b", "c", "d", "e")

    def step(self, name: str, ctx: durable.Context) -> Next | Done:
        if name == "e":
            return Done()
        return Next(self.steps[self.steps.index(name) + 1])


class Countdown:
    """A Runner observer: an event once ``n`` committed steps were seen."""

    def __init__(self, n: int) -> None:
        self._left = n
        self._lock = threading.Lock()
        self.done = threading.Event()

    def __call__(self, report: durable.StepReport) -> None:
        if report.committed and report.fsm in (Nop.name, Steps.name):
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self.done.set()


@pytest.fixture
def counter(engine: Engine) -> Iterator[StatementCounter]:
    watched = StatementCounter(engine)
    yield watched
    watched.close()


def run_steps(
    engine: Engine, counter: StatementCounter, specs: list[Any], steps: int, concurrency: int
) -> dict[str, float]:
    """Insert, run a Runner until ``steps`` steps committed; the hot path's counts per step."""
    with Session(engine) as s, s.begin():
        durable.insert_all(s, specs)
    countdown = Countdown(steps)
    with Runner(  # maintenance kept quiet: long lease (heartbeat), long intervals
        engine,
        queues={"default": concurrency},
        observer=countdown,
        lease=60.0,
        poll_interval=5.0,
        reaper_interval=60.0,
        gc_interval=3600.0,
    ):
        assert countdown.done.wait(60), "the steps did not all commit in time"
        counts = counter.hot()
    per_step = {k: v / steps for k, v in counts.items()}
    print(f"per step at concurrency {concurrency}: {per_step}; {counter.texts.most_common(8)}")
    return per_step


def test_an_unbatched_job_step_stays_within_its_statement_budget(
    engine: Engine, counter: StatementCounter
) -> None:
    per_step = run_steps(engine, counter, [Nop.new() for _ in range(100)], 100, concurrency=1)
    assert per_step["statements"] <= STATEMENTS_PER_STEP
    assert per_step["round_trips"] <= ROUND_TRIPS_PER_STEP
    assert per_step["commit"] <= COMMITS_PER_STEP


def test_an_unbatched_fsm_step_stays_within_its_statement_budget(
    engine: Engine, counter: StatementCounter
) -> None:
    per_step = run_steps(engine, counter, [Steps.new() for _ in range(20)], 100, concurrency=1)
    assert per_step["statements"] <= STATEMENTS_PER_STEP
    assert per_step["round_trips"] <= ROUND_TRIPS_PER_STEP
    assert per_step["commit"] <= COMMITS_PER_STEP


def test_batched_job_steps_amortise_claims_and_commits(
    engine: Engine, counter: StatementCounter
) -> None:
    per_step = run_steps(engine, counter, [Nop.new() for _ in range(500)], 500, concurrency=10)
    assert per_step["statements"] <= BATCHED_STATEMENTS_PER_STEP
    assert per_step["commit"] <= 1.0


# -- per statement -----------------------------------------------------------------------------


def _statements(conn: Connection, call: Any) -> int:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(conn, "before_cursor_execute", count)
    try:
        call()
    finally:
        event.remove(conn, "before_cursor_execute", count)
    return len(seen)


def _claim_and_commit(engine: Engine, rows: int) -> tuple[int, int]:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Nop.new() for _ in range(rows)])
    with engine.begin() as conn:
        claimed: list[Any] = []
        claim = _statements(
            conn,
            lambda: claimed.extend(
                store.claims.claim(conn, "default", [Nop.name], rows, "rt", 30, None)
            ),
        )
        assert len(claimed) == rows
        transitions = [transition_for(r) for r in claimed]
        commit = _statements(conn, lambda: store.transitions.commit(conn, transitions, None))
    return claim, commit


def test_claim_and_commit_cost_the_same_statements_for_one_row_or_fifty(engine: Engine) -> None:
    assert _claim_and_commit(engine, 1) == _claim_and_commit(engine, 50)
