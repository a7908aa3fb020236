"""A worker is free once its step's transition is queued for the committer; the instance
itself moves on only after that transition committed."""

from __future__ import annotations

import threading
from typing import Any

from _support.helpers import snapshot, wait_status
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Context, Job, Next, Runner, step

entered = threading.Event()
proceed = threading.Event()
second_step_started = threading.Event()


class TwoSteps(FSM):
    name = "pipelined.TwoSteps"

    @step
    def first(self, ctx: Context) -> Any:
        entered.set()
        proceed.wait(20)
        return Next("second")

    @step
    def second(self, ctx: Context) -> Any:
        second_step_started.set()
        return durable.Done("ok")


class Quick(Job):
    name = "pipelined.Quick"

    def perform(self, args: Any) -> int:
        return int(args["n"])


def test_a_stuck_commit_holds_its_instance_but_not_its_worker(engine: Engine) -> None:
    for event in (entered, proceed, second_step_started):
        event.clear()
    with Session(engine) as s, s.begin():
        held = durable.insert(s, TwoSteps)
    with Runner(engine, queues={"default": 1}, lease=30, poll_interval=0.05):
        assert entered.wait(20)
        with engine.connect() as locker:
            # Lock the row from outside before the step returns: its commit cannot land.
            locker.execute(
                text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"),
                {"i": held},
            )
            proceed.set()
            with Session(engine) as s, s.begin():
                quick = durable.insert_all(s, [Quick.new(args={"n": n}) for n in range(5)])
            # One worker slot, and the stuck commit does not occupy it: the jobs finish.
            for iid in quick:
                wait_status(engine, iid, "done")
            row = snapshot(engine, held)
            assert (row.status, row.step) == ("running", "first")
            assert not second_step_started.is_set()
            locker.rollback()
        wait_status(engine, held, "done")
    assert second_step_started.is_set()
