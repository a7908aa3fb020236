"""Concurrency keys: at most ``limit`` running per key across runners, no head-of-line
blocking, slots of crashed holders freed, and the release/claim race forced both ways."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import attrs
import pytest
from _support.helpers import (
    backend_waiting_on_lock,
    scalar,
    snapshot,
    transition_for,
    wait_status,
    wait_until,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Runner, store
from gen_durable.domain.decide import Transition
from gen_durable.errors import ValidationError

FAST = {"lease": 5.0, "poll_interval": 0.1, "grace": 2.0}


class Meter:
    """Counts how many steps of each key run at the same moment."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def enter(self, key: str) -> None:
        with self.lock:
            self.active[key] += 1
            self.peak[key] = max(self.peak[key], self.active[key])

    def leave(self, key: str) -> None:
        with self.lock:
            self.active[key] -= 1


METER = Meter()


class Charge(Job):
    name = "ck.Charge"

    @attrs.define
    class Args:
        customer: int
        pause: float = 0.05

    @staticmethod
    def concurrency_key(args: Any) -> str:
        return f"customer:{args.customer}"

    def perform(self, args: Any) -> int:
        key = f"customer:{args.customer}"
        METER.enter(key)
        try:
            time.sleep(args.pause)
        finally:
            METER.leave(key)
        return args.customer


def test_at_most_limit_run_per_key_across_runners_and_keys_run_in_parallel(
    engine: Engine,
) -> None:
    METER.peak.clear()
    with Session(engine) as s, s.begin():
        durable.insert_all(
            s,
            [Charge.new(args={"customer": 1}, concurrency_limit=2) for _ in range(12)]
            + [Charge.new(args={"customer": 2}) for _ in range(6)],
        )
    with (
        Runner(engine, queues={"default": 6}, **FAST),
        Runner(engine, queues={"default": 6}, **FAST),
    ):
        wait_until(
            lambda: (
                scalar(
                    engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'"
                )
                == 18
            ),
            timeout=60,
        )
    assert METER.peak["customer:1"] == 2  # the limit was reached, never passed
    assert METER.peak["customer:2"] == 1


class Hot(Job):
    name = "ck.Hot"
    done = 0

    def perform(self, args: Any) -> None:
        time.sleep(0.05)
        type(self).done += 1


class Cold(Job):
    name = "ck.Cold"

    def perform(self, args: Any) -> None:
        return None


def test_instances_waiting_on_a_busy_key_never_block_other_work(engine: Engine) -> None:
    Hot.done = 0
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Hot.new(concurrency_key="hot") for _ in range(40)])
        cold = durable.insert_all(s, [Cold.new() for _ in range(5)])  # queued behind them
    with Runner(engine, queues={"default": 4}, **FAST):
        for iid in cold:
            wait_status(engine, iid, "done")
        hot_done_when_cold_finished = Hot.done
        blocked = scalar(
            engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'blocked'"
        )
    assert hot_done_when_cold_finished < 40
    assert blocked > 0  # waiting instances sit outside the picker's index


class Keyed(FSM):
    name = "ck.Keyed"
    steps = ("go",)

    def go(self, ctx: durable.Context) -> Done:
        return Done()


def _claim(engine: Engine, limit: int = 10) -> list[Any]:
    with engine.begin() as conn:
        return store.claims.claim(conn, "default", ["ck.Keyed"], limit, "n", 30, None)


def _done(row: Any) -> Transition:
    return transition_for(row, step="go")


def test_a_crashed_holders_slot_is_freed_by_the_reaper(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        first, second = durable.insert_all(
            s, [Keyed.new(concurrency_key="k"), Keyed.new(concurrency_key="k")]
        )
    claimed = _claim(engine)
    assert [r.id for r in claimed] == [first]
    assert snapshot(engine, second).status == "blocked"
    with engine.begin() as conn:  # the holder's lease lapses (its runner died)
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET lease_expires_at = now() - interval '1s' "
                "WHERE id = :id"
            ),
            {"id": first},
        )
        store.maintenance.reap(conn, 10, None)
        store.concurrency.release(conn, ["k"], None)
    assert snapshot(engine, second).status == "available"


def test_a_release_waits_for_a_claimer_deciding_on_the_same_key(engine: Engine) -> None:
    """The claimer holds the key's lock while it blocks a candidate; the release must wait
    for it and then unblock that candidate, or the key would be stranded."""
    with Session(engine) as s, s.begin():
        _, second = durable.insert_all(
            s, [Keyed.new(concurrency_key="k"), Keyed.new(concurrency_key="k")]
        )
    [holder] = _claim(engine, 1)
    with engine.connect() as claimer:
        tx = claimer.begin()
        assert store.claims.claim(claimer, "default", ["ck.Keyed"], 10, "n", 30, None) == []
        result: dict[str, Any] = {}

        def finish_holder() -> None:
            with engine.begin() as conn:
                result["landed"] = store.transitions.commit(conn, [_done(holder)], None)

        t = threading.Thread(target=finish_holder)
        t.start()
        backend_waiting_on_lock(engine)
        tx.commit()  # second is now blocked, and the release can see it
        t.join(10)
    assert result["landed"][second].status == "available"
    assert snapshot(engine, second).status == "available"


def test_a_claimer_skips_a_key_another_claimer_is_deciding_on(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Keyed.new(concurrency_key="k"), Keyed.new(concurrency_key="j")])
    with engine.connect() as first:
        tx = first.begin()
        first.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"gen_durable:{durable.schema_name()}:k"},
        )
        taken = _claim(engine)  # does not wait: "k" is skipped this round, "j" runs
        tx.commit()
    assert [r.concurrency_key for r in taken] == ["j"]
    assert [r.concurrency_key for r in _claim(engine)] == ["k"]


@pytest.mark.parametrize(
    "kwargs",
    [{"concurrency_key": ""}, {"concurrency_key": 7}, {"concurrency_limit": 0}],
)
def test_bad_concurrency_options_raise_typed_errors(
    session: Session, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        durable.insert(session, Keyed, **{"concurrency_key": "k", **kwargs})
    assert session.execute(text("SELECT count(*) FROM gen_durable.gd_instances")).scalar() == 0


class OnAccount(Job):
    name = "ck.OnAccount"

    @attrs.define
    class Args:
        account: int

    @staticmethod
    def concurrency_key(args: Any) -> str:
        return f"account:{args.account}"

    def perform(self, args: Any) -> None:
        return None


class Mover(FSM):
    """Moves its account from 1 to 2 in its first step; its key follows the state."""

    name = "ck.Mover"
    steps = ("move", "hold")
    moving = threading.Event()
    may_move = threading.Event()
    holding = threading.Event()
    may_finish = threading.Event()

    @attrs.define
    class State:
        account: int

    @staticmethod
    def concurrency_key(state: Any) -> str:
        return f"account:{state.account}"

    def move(self, ctx: durable.Context) -> durable.Next:
        type(self).moving.set()
        assert type(self).may_move.wait(20)
        ctx.state.account = 2
        return durable.Next("hold")

    def hold(self, ctx: durable.Context) -> Done:
        type(self).holding.set()
        assert type(self).may_finish.wait(20)
        return Done()


def test_a_key_from_the_class_function_follows_the_state_and_frees_the_old_one(
    engine: Engine,
) -> None:
    for gate in (Mover.moving, Mover.may_move, Mover.holding, Mover.may_finish):
        gate.clear()
    with Session(engine) as s, s.begin():
        mover = durable.insert(s, Mover, state={"account": 1})
    # The reaper's safety net (unblocking keys with nothing running) must not do the work.
    with Runner(engine, queues={"default": 3}, **{**FAST, "reaper_interval": 60.0}):
        assert Mover.moving.wait(10)
        with Session(engine) as s, s.begin():
            waiting = durable.insert(s, OnAccount, args={"account": 1})
        wait_status(engine, waiting, "blocked")
        Mover.may_move.set()
        # The move's commit released account:1 (the key it held, not the one it moved to).
        wait_status(engine, waiting, "done", timeout=10)
        assert _key_of(engine, mover) == "account:2"
        assert Mover.holding.wait(10)
        with Session(engine) as s, s.begin():
            behind = durable.insert(s, OnAccount, args={"account": 2})
        wait_status(engine, behind, "blocked")  # the mover holds account:2 now
        Mover.may_finish.set()
        wait_status(engine, mover, "done")
        wait_status(engine, behind, "done")


def test_a_key_given_to_insert_stays_whatever_the_state(engine: Engine) -> None:
    for gate in (Mover.moving, Mover.may_move, Mover.may_finish):
        gate.set()
    with Session(engine) as s, s.begin():
        mover = durable.insert(s, Mover, state={"account": 1}, concurrency_key="pinned")
    with Runner(engine, **FAST):
        wait_status(engine, mover, "done")
    assert _key_of(engine, mover) == "pinned"


def _key_of(engine: Engine, instance_id: int) -> object:
    return scalar(
        engine,
        "SELECT concurrency_key FROM gen_durable.gd_instances WHERE id = :id",
        id=instance_id,
    )
