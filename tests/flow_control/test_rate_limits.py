"""Token-bucket rate limits, enforced at claim time in the database across runners."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from _support.helpers import scalar, snapshot, wait_until
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, RateLimit, RateLimited, Runner, store
from gen_durable.domain.decide import Route, StepSnapshot, decide
from gen_durable.errors import DefinitionError, RateLimitedError, ValidationError
from gen_durable.runtime.claiming import rate_limit_of
from gen_durable.testing import drain

FAST = {"lease": 5.0, "poll_interval": 0.1, "grace": 2.0}
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Starts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[str, list[float]] = {}

    def add(self, key: str) -> None:
        with self.lock:
            self.times.setdefault(key, []).append(time.monotonic())

    def busiest(self, key: str, window: float) -> int:
        times = sorted(self.times.get(key, []))
        return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


STARTS = Starts()


class Call(Job):
    name = "rl.Call"
    rate_limit = RateLimit(4, per=1, burst=4, partition=lambda args: args.merchant)

    @attrs.define
    class Args:
        merchant: str

    def perform(self, args: Any) -> None:
        STARTS.add(args.merchant)


def test_observed_rate_stays_within_rate_times_window_plus_burst_per_partition(
    engine: Engine,
) -> None:
    STARTS.times.clear()
    with Session(engine) as s, s.begin():
        durable.insert_all(
            s, [Call.new(args={"merchant": m}) for m in ("a", "b") for _ in range(12)]
        )
    with (
        Runner(engine, queues={"default": 8}, **FAST),
        Runner(engine, queues={"default": 8}, **FAST),
    ):
        wait_until(
            lambda: (
                scalar(
                    engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'"
                )
                == 24
            ),
            timeout=60,
        )
    for merchant in ("a", "b"):  # each partition has its own bucket
        assert len(STARTS.times[merchant]) == 12
        # rate x window + burst, with one token of slack for the start-time jitter
        assert STARTS.busiest(merchant, 1.0) <= 4 * 1 + 4 + 1


class Priced(FSM):
    name = "rl.Priced"
    steps = ("charge",)
    rate_limits = {"charge": RateLimit(10, per=10, burst=10, weight=lambda s: s["cost"])}

    def charge(self, ctx: durable.Context) -> Done:
        return Done()


def _claim(engine: Engine, now: datetime, limit: int = 10) -> list[int]:
    with engine.begin() as conn:
        rows = store.claims.claim(
            conn, "default", ["rl.Priced"], limit, "n", 30, now, rate_limit_of
        )
    return [r.id for r in rows]


def test_a_weighted_step_takes_its_weight_and_waiting_uses_no_attempt(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        heavy, light = durable.insert_all(
            s, [Priced.new(state={"cost": 8}), Priced.new(state={"cost": 3})]
        )
    assert _claim(engine, T0) == [heavy]  # 8 of 10 tokens; 3 more do not fit
    deferred = snapshot(engine, light)
    assert deferred.status == "scheduled" and deferred.attempt == 0
    # the bucket refills at 1 token/s: 1 more second makes 3
    assert deferred.run_at == T0 + timedelta(seconds=1)
    with engine.begin() as conn:
        store.maintenance.stage_due(conn, 10, T0 + timedelta(seconds=1))
    assert _claim(engine, T0 + timedelta(seconds=1)) == [light]


def test_instances_waiting_on_a_bucket_are_given_their_place_in_line(engine: Engine) -> None:
    """Regression: every candidate a claim could not pay for was told to come back when
    the first token would be there; all came back at once and all but one waited again."""
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Priced.new(state={"cost": 4}) for _ in range(5)])
    assert _claim(engine, T0) == ids[:2]  # the burst of 10 pays for two of weight 4
    waits = [snapshot(engine, i).run_at - T0 for i in ids[2:]]
    # 2 tokens left, 1 per second: the third needs 2 more, the fourth 6, the fifth 10.
    assert waits == [timedelta(seconds=2), timedelta(seconds=6), timedelta(seconds=10)]


class Remote(FSM):
    name = "rl.Remote"
    steps = ("call",)
    rate_limit = RateLimit(100, per=1, partition=lambda s: s["tenant"])
    attempts: list[int] = []

    def call(self, ctx: durable.Context) -> Any:
        type(self).attempts.append(ctx.attempt)
        if ctx.state.get("refuse") and len(type(self).attempts) == 1:
            if ctx.state["refuse"] == "raise":
                raise RateLimitedError(0.5)
            return RateLimited(0.5)
        return Done(ctx.attempt)


@pytest.mark.parametrize("how", ["outcome", "raise"])
def test_rate_limited_puts_the_bucket_in_debt_and_reruns_without_an_attempt(
    engine: Engine, how: str
) -> None:
    Remote.attempts.clear()
    with Session(engine) as s, s.begin():
        first = durable.insert(s, Remote, state={"tenant": "t", "refuse": how})
    with Runner(engine, **FAST):
        wait_until(lambda: len(Remote.attempts) == 1)
        with Session(engine) as s, s.begin():  # a sibling in the same partition must wait
            sibling = durable.insert(s, Remote, state={"tenant": "t"})
            other = durable.insert(s, Remote, state={"tenant": "u"})
        wait_until(lambda: snapshot(engine, other).status == "done")
        done = wait_until(lambda: snapshot(engine, first).finished and snapshot(engine, first))
        wait_until(lambda: snapshot(engine, sibling).status == "done")
    assert done.result == 1  # the re-run is attempt 1 again: none was used
    assert Remote.attempts[:2] == [1, 1]
    debts = (
        "SELECT count(*) FROM gen_durable.gd_rate_buckets WHERE key = :k AND debt_until IS NOT NULL"
    )
    assert scalar(engine, debts, k="rl.Remote:*:t") == 1  # the refusing partition
    assert scalar(engine, debts, k="rl.Remote:*:u") == 0  # not the others


def test_the_debt_holds_back_every_instance_of_the_partition(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Priced, state={"cost": 1})
    with engine.begin() as conn:
        store.ratelimits.indebt(conn, [("rl.Priced:charge:", 5.0)], T0)
    assert _claim(engine, T0 + timedelta(seconds=1)) == []
    assert snapshot(engine, iid).run_at == T0 + timedelta(seconds=5)
    with engine.begin() as conn:
        store.maintenance.stage_due(conn, 10, T0 + timedelta(seconds=5))
    assert _claim(engine, T0 + timedelta(seconds=5)) == [iid]


def test_refusals_of_one_bucket_in_one_commit_group_become_one_debt(engine: Engine) -> None:
    """Regression: two RateLimited outcomes of the same partition committed together made
    the debt upsert touch its row twice, and the group could never commit."""
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Remote.new(state={"tenant": "t"}) for _ in range(2)])
    with engine.begin() as conn:
        rows = store.claims.claim(conn, "default", [Remote.name], 10, "n", 30, T0, rate_limit_of)
    assert sorted(r.id for r in rows) == sorted(ids)
    bucket = Route(rate_key="rl.Remote:*:t", rate_weight=1.0)
    transitions = [
        decide(
            StepSnapshot(
                r.id,
                r.fsm,
                r.step,
                ("call",),
                r.attempt,
                r.max_attempts,
                lease_token=r.lease_token,
                version=r.version,
            ),
            RateLimited(wait),
            None,
            route=lambda _step: bucket,
        )
        for r, wait in zip(rows, (2.0, 5.0), strict=True)
    ]
    with engine.begin() as conn:
        landed = store.transitions.commit(conn, transitions, T0)
    assert set(landed) == set(ids)
    until = scalar(
        engine,
        "SELECT debt_until FROM gen_durable.gd_rate_buckets WHERE key = :k",
        k="rl.Remote:*:t",
    )
    assert until == T0 + timedelta(seconds=5)  # the longest wait


def test_bad_rate_limits_raise_typed_errors(session: Session) -> None:
    with pytest.raises(DefinitionError):
        RateLimit(-1)
    with pytest.raises(DefinitionError):
        RateLimit(1, per=0)
    with pytest.raises(DefinitionError):

        class Wrong(FSM):
            steps = ("a",)
            rate_limits = {"b": RateLimit(1)}

    with pytest.raises(ValidationError):  # could never fit its bucket
        durable.insert(session, Priced, state={"cost": 11})
    assert durable.insert(session, Priced, state={"cost": 10}) > 0


class Refused(FSM):
    name = "rl.Refused"
    steps = ("call",)

    def call(self, ctx: durable.Context) -> Any:
        ctx.state["tries"] = ctx.state.get("tries", 0) + 1
        return RateLimited(60)


def test_a_returned_rate_limited_stores_no_in_place_change(engine: Engine) -> None:
    """RateLimited re-runs the step from the state it was claimed with, as a failure does;
    stored in-place changes would make the re-run see a state no commit moved on to."""
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Refused)
    assert [r.decision.kind for r in drain(engine)] == ["rate_limited"]
    assert snapshot(engine, iid).state == {}
    assert snapshot(engine, iid).attempt == 0
