"""Rows locked from outside, and transactions held while step code runs (in-process runner)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _support.helpers import wait_until
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from chaos.harness import query, tier, value
from gen_durable import FSM, Done, Next, Runner

pytestmark = pytest.mark.chaos

GATE = threading.Event()
RETURNED = threading.Event()


class Gated(FSM):
    """Two steps; with ``gate`` set, step ``a`` waits for the test before it returns."""

    name = "chaos.Gated"
    steps = ("a", "b")

    def a(self, ctx: durable.Context) -> Next:
        if ctx.state.get("gate"):
            GATE.wait(120)
            RETURNED.set()
        return Next("b")

    def b(self, ctx: durable.Context) -> Done:
        return Done()


def _insert(engine: Engine, count: int, **state: Any) -> list[int]:
    with Session(engine) as s, s.begin():
        return durable.insert_all(s, [Gated.new(state=dict(state)) for _ in range(count)])


def _statuses(engine: Engine, ids: list[int]) -> dict[str, int]:
    rows = query(
        engine,
        "SELECT status, count(*) AS n FROM gen_durable.gd_instances WHERE id = ANY(:ids) "
        "GROUP BY status",
        ids=ids,
    )
    return {r.status: r.n for r in rows}


def _deadlocks(engine: Engine) -> int:
    return int(
        value(engine, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    )


def test_rows_locked_from_outside_stall_nothing(engine: Engine, figures: dict[str, Any]) -> None:
    """An outside transaction holds ``FOR UPDATE`` locks on runnable rows and on a running
    row whose commit is queued in the grouped committer, for several seconds.

    The claim skips the locked rows, the committer does not let the locked row stall the
    group (other instances keep committing), no deadlock, and every instance finishes once
    the lock is gone.
    """
    hold = tier(5.0, 10.0)
    GATE.clear()
    RETURNED.clear()
    count = tier(200, 1000)
    options: dict[str, Any] = {"lease": 30.0, "poll_interval": 0.2, "grace": 1.0}
    with Runner(engine, queues={"default": 8}, **options):  # the same work, nothing locked
        baseline_started = time.monotonic()
        baseline = _insert(engine, count)
        wait_until(lambda: _statuses(engine, baseline) == {"done": count}, 120)
        baseline_s = time.monotonic() - baseline_started
    held = _insert(engine, 3)
    [gated] = _insert(engine, 1, gate=True)
    deadlocks = _deadlocks(engine)
    runner = Runner(engine, queues={"default": 8}, **options)
    with engine.connect() as holder:
        holder.begin()
        lock = text("SELECT id FROM gen_durable.gd_instances WHERE id = ANY(:ids) FOR UPDATE")
        holder.execute(lock, {"ids": held})
        with runner:
            wait_until(lambda: _statuses(engine, [gated]).get("running"), 60)
            holder.execute(lock, {"ids": [gated]})
            locked_at = time.monotonic()
            GATE.set()  # its step returns; its transition waits on the outside lock
            RETURNED.wait(60)
            others_started = time.monotonic()
            others = _insert(engine, count)
            wait_until(lambda: _statuses(engine, others) == {"done": count}, 120)
            others_s = time.monotonic() - others_started
            done_while_held = time.monotonic()
            if done_while_held - locked_at < hold:
                time.sleep(hold - (done_while_held - locked_at))
            skipped = _statuses(engine, held)
            pending = _statuses(engine, [gated])
            attempts = value(
                engine,
                "SELECT max(attempt) FROM gen_durable.gd_instances WHERE id = ANY(:ids)",
                ids=held,
            )
            held_for = time.monotonic() - locked_at
            holder.rollback()
            released = time.monotonic()
            wait_until(lambda: _statuses(engine, [*held, gated]) == {"done": 4}, 60)
            recovered = time.monotonic() - released
    figures.update(
        {
            "lock_held_s": round(held_for, 1),
            "locked_runnable_rows": len(held),
            "locked_running_rows": 1,
            "instances_finished_meanwhile": count,
            "their_s": round(others_s, 2),
            "same_work_nothing_locked_s": round(baseline_s, 2),
            "groups_stalled_by_the_lock": runner.committer.stalled_groups,
            "locked_rows_claimed_meanwhile": 0 if attempts == 0 else attempts,
            "deadlocks": _deadlocks(engine) - deadlocks,
            "locked_rows_done_after_release_s": round(recovered, 2),
        }
    )
    assert skipped == {"available": len(held)} and attempts == 0  # the claim skipped them
    assert pending == {"running": 1}  # its commit waits for the lock, alone
    assert _deadlocks(engine) == deadlocks
    # A row found locked is retried alone: it holds up at most the group it was first in.
    assert runner.committer.stalled_groups <= 1


class Holder(FSM):
    """One step that waits for the test, with or without ``ctx.session`` open."""

    name = "chaos.Holder"
    steps = ("wait",)

    def wait(self, ctx: durable.Context) -> Done:
        if ctx.state.get("session"):
            ctx.session.execute(text("SELECT 1"))
        ENTERED.release()
        GATE.wait(120)
        return Done()


ENTERED = threading.Semaphore(0)


def _open_transactions(engine: Engine) -> set[tuple[int, Any]]:
    """(backend, transaction start) of every other backend with a transaction open."""
    rows = query(
        engine,
        "SELECT pid, xact_start FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )
    return {(r.pid, r.xact_start) for r in rows}


@pytest.mark.parametrize("session", [False, True])
def test_no_transaction_spans_step_code(
    engine: Engine, figures: dict[str, Any], session: bool
) -> None:
    """No transaction is open while the code of a step that does not use ``ctx.session``
    runs.

    ``pg_stat_activity`` is sampled as the steps start and as they end: a transaction seen
    at both spans step code. There is none for steps without ``ctx.session``; a step that
    opens ``ctx.session`` does hold one — the control that shows the sampling sees it.
    """
    steps = 6
    GATE.clear()
    while ENTERED.acquire(blocking=False):
        pass
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Holder.new(state={"session": session}) for _ in range(steps)])
    with Runner(engine, queues={"default": steps}, lease=30.0, poll_interval=0.2, grace=1.0):
        for _ in range(steps):
            assert ENTERED.acquire(timeout=60)
        first = _open_transactions(engine)
        time.sleep(1.0)
        last = _open_transactions(engine)
        GATE.set()
        wait_until(
            lambda: (
                value(
                    engine,
                    "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'",
                )
                == steps
            ),
            60,
        )
    spanning = first & last
    figures.update({"steps_running": steps, "uses_session": session, "spanning": len(spanning)})
    if session:
        assert len(spanning) == steps
    else:
        assert not spanning
