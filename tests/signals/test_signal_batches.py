"""Signals where rows batch together: wakes, claims and commits that mix instances.

Each test puts instances in different situations into the same batch and checks every
instance against what it alone should see. The pack rules: an all-of await resumes only
on its own instance's signals; every attempt of a step gets the pack its first claim built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from _support.helpers import count, snapshot, wait_until
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, RateLimited, Runner, store
from gen_durable.runtime import claiming
from gen_durable.runtime.held import HeldConnection
from gen_durable.testing import advance, drain

FAST = {"lease": 5.0, "poll_interval": 0.2, "grace": 5.0}


class AllOf(FSM):
    name = "batch.AllOf"
    steps = ("wait", "go")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("a", "b", all=True, then="go")

    def go(self, ctx: durable.Context) -> Done:
        return Done([s.name for s in ctx.awaited])


def _send(s: Session, target: int, *names: str) -> None:
    for name in names:
        durable.signal(s, target, name, None)


def _settle(engine: Engine, mode: str, finished: list[int], parked: list[int]) -> None:
    """Run until ``finished`` are done and ``parked`` have parked (each alone would)."""
    if mode == "drain":
        drain(engine)
        return
    with Runner(engine, **FAST):  # a grouped committer: the parking commits mix instances

        def settled() -> bool:
            done = all(snapshot(engine, i).status == "done" for i in finished)
            return done and all(snapshot(engine, i).version >= 1 for i in parked)

        wait_until(settled, timeout=60)


def _packs(engine: Engine, ids: list[int]) -> dict[int, Any]:
    return {i: snapshot(engine, i).result for i in ids}


@pytest.mark.parametrize("mode", ["drain", "runner"])
def test_all_of_wakes_only_on_the_instances_own_signals(engine: Engine, mode: str) -> None:
    """Insert path: both signals sent in the insert's transaction for half of them."""
    with Session(engine) as s, s.begin():
        both = [durable.insert(s, AllOf) for _ in range(20)]
        only_a = [durable.insert(s, AllOf) for _ in range(10)]
        none = [durable.insert(s, AllOf) for _ in range(10)]
        for i in both:
            _send(s, i, "a", "b")
        for i in only_a:
            _send(s, i, "a")
    _settle(engine, mode, both, only_a + none)

    assert _packs(engine, both) == {i: ["a", "b"] for i in both}
    for i in only_a + none:
        snap = snapshot(engine, i)
        assert (snap.status, snap.version) == ("awaiting", 1), f"{i} woke: {snap}"

    # Signal path: a waiter sent only "a" while other instances have "b" pending (the
    # finished ones' leftovers) must stay parked; one sent the missing "b" resumes.
    with Session(engine) as s, s.begin():
        for i in both:
            _send(s, i, "a", "b")  # leftovers of finished instances
        for i in only_a:
            _send(s, i, "b")
        for i in none:
            _send(s, i, "a")
    _settle(engine, mode, only_a, none)

    assert _packs(engine, only_a) == {i: ["a", "b"] for i in only_a}
    for i in none:
        snap = snapshot(engine, i)
        assert (snap.status, snap.version) == ("awaiting", 1), f"{i} woke: {snap}"


def test_a_new_all_of_waiter_is_not_woken_by_a_finished_instances_leftovers(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        old = durable.insert(s, AllOf)
        _send(s, old, "a", "b")
    drain(engine)
    with Session(engine) as s, s.begin():
        _send(s, old, "a", "b")  # kept as leftovers of a finished instance
        new = durable.insert(s, AllOf)
    drain(engine)
    assert snapshot(engine, old).status == "done"
    assert (snapshot(engine, new).status, snapshot(engine, new).version) == ("awaiting", 1)


# -- the same pack for every attempt of a step ------------------------------------------------

SEEN: dict[int, list[list[str]]] = defaultdict(list)
"""instance id -> the pack (payloads) each attempt of ``take`` saw."""
TROUBLE: dict[int, list[str]] = {}
"""instance id -> what its next attempts of ``take`` do: "raise", "rate_limited", "ok"."""


class Taker(FSM):
    name = "batch.Taker"
    steps = ("wait", "take")
    max_attempts = 3

    def wait(self, ctx: durable.Context) -> Await:
        return Await("s", then="take")

    def take(self, ctx: durable.Context) -> Any:
        SEEN[ctx.instance_id].append([s.payload for s in ctx.awaited])
        plan = TROUBLE.get(ctx.instance_id) or ["ok"]
        what = plan.pop(0)
        if what == "raise":
            raise RuntimeError("the first attempt fails")
        if what == "rate_limited":
            return RateLimited(0.01)
        return Done([s.payload for s in ctx.awaited])


@pytest.fixture
def taker_log() -> Iterator[None]:
    SEEN.clear()
    TROUBLE.clear()
    yield
    SEEN.clear()
    TROUBLE.clear()


def _signal(engine: Engine, target: int, payload: str) -> None:
    with Session(engine) as s, s.begin():
        durable.signal(s, target, "s", payload)


def _parked_takers(engine: Engine, plans: list[list[str]]) -> list[int]:
    with Session(engine) as s, s.begin():
        ids = [durable.insert(s, Taker, queue="takers") for _ in plans]
    for i, plan in zip(ids, plans, strict=True):
        TROUBLE[i] = list(plan)
    drain(engine)
    return ids


def _pending(engine: Engine, target: int) -> list[Any]:
    return [x.payload for x in snapshot(engine, target).signals if x.consumed_at is None]


@pytest.mark.usefixtures("taker_log")
def test_a_retry_and_a_rate_limited_rerun_get_the_first_attempts_pack(engine: Engine) -> None:
    """Mixed in one claim: one raises, one is rate limited, one succeeds at once."""
    raiser, limited, plain = _parked_takers(engine, [["raise"], ["rate_limited"], []])
    for i in (raiser, limited, plain):
        _signal(engine, i, f"{i}:1")
    drain(engine)  # first attempts: one claim holds all three
    for i in (raiser, limited):
        _signal(engine, i, f"{i}:2")  # arrives during the backoff
    advance(engine, 3600)
    drain(engine)

    for i in (raiser, limited, plain):
        assert snapshot(engine, i).result == [f"{i}:1"], SEEN[i]
    assert SEEN[raiser] == [[f"{raiser}:1"]] * 2
    assert SEEN[limited] == [[f"{limited}:1"]] * 2
    assert _pending(engine, raiser) == [f"{raiser}:2"]  # for the next await, not lost
    assert _pending(engine, limited) == [f"{limited}:2"]


@pytest.mark.usefixtures("taker_log")
def test_a_lost_lease_and_a_released_claim_give_the_same_pack_back(engine: Engine) -> None:
    lost, released = _parked_takers(engine, [[], []])
    _signal(engine, lost, "lost:1")
    _signal(engine, released, "released:1")
    # One worker claims and dies (its lease lapses), another shuts down (gives it back).
    [dead] = claiming.claim(engine, "takers", [Taker.name], 1, "node-gone", 0.001)
    [alive] = claiming.claim(engine, "takers", [Taker.name], 1, "node-leaving", 600)
    assert (dead.id, [s.payload for s in dead.awaited]) == (lost, ["lost:1"])
    assert (alive.id, [s.payload for s in alive.awaited]) == (released, ["released:1"])
    _signal(engine, lost, "lost:2")
    _signal(engine, released, "released:2")
    with engine.begin() as conn:
        assert [r.id for r in store.maintenance.reap(conn, 10, None)] == [lost]
        assert store.leases.release(conn, [(released, alive.lease_token)], None) == [released]
    drain(engine)

    assert snapshot(engine, lost).result == ["lost:1"]
    assert snapshot(engine, released).result == ["released:1"]
    assert _pending(engine, lost) == ["lost:2"]
    assert _pending(engine, released) == ["released:2"]


class TakeOnce(FSM):
    name = "batch.TakeOnce"
    steps = ("wait", "take")
    max_attempts = 1

    def wait(self, ctx: durable.Context) -> Await:
        return Await("s", then="take")

    def take(self, ctx: durable.Context) -> Done:
        SEEN[ctx.instance_id].append([s.payload for s in ctx.awaited])
        if len(SEEN[ctx.instance_id]) == 1:
            raise RuntimeError("fails for good")
        return Done([s.payload for s in ctx.awaited])


@pytest.mark.usefixtures("taker_log")
def test_a_retry_from_outside_gets_the_failed_steps_pack(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, TakeOnce)
    drain(engine)
    _signal(engine, iid, "first")
    drain(engine)
    assert snapshot(engine, iid).status == "failed"
    assert _pending(engine, iid) == ["first"]  # a failed step consumes nothing
    _signal(engine, iid, "late")
    with Session(engine) as s, s.begin():
        durable.retry(s, iid)
    drain(engine)
    assert snapshot(engine, iid).result == ["first"]
    assert SEEN[iid] == [["first"], ["first"]]
    assert _pending(engine, iid) == ["late"]


@pytest.mark.usefixtures("taker_log")
def test_a_committed_step_forgets_its_pack(engine: Engine) -> None:
    """The next await builds a new pack: the record lives only as long as its step."""
    [iid] = _parked_takers(engine, [[]])
    _signal(engine, iid, "one")
    drain(engine)
    assert snapshot(engine, iid).result == ["one"]
    recorded = "SELECT count(*) FROM gen_durable.gd_instances WHERE await_pack IS NOT NULL"
    assert count(engine, recorded) == 0


class Carrier(FSM):
    """Parks on an any-of or an all-of await, or fails its first attempt after changing its
    state in place, as its state's ``mode`` says."""

    name = "batch.Carrier"
    steps = ("wait", "go")

    def wait(self, ctx: durable.Context) -> Any:
        mode = ctx.state["mode"]
        if mode == "fail" and ctx.attempt == 1:
            ctx.state["deep"]["seen"].append("spoiled")
            raise RuntimeError("the first attempt fails")
        if mode == "any":
            return Await("x", "y", then="go")
        if mode == "all":
            return Await("a", "b", all=True, then="go")
        return Done()

    def go(self, ctx: durable.Context) -> Done:
        return Done()


@pytest.mark.parametrize("at_once", [False, True], ids=["in_transaction", "at_once"])
def test_one_claim_over_a_mixed_batch_gives_each_row_its_own_state_and_pack(
    engine: Engine, at_once: bool
) -> None:
    """One claim takes rows awaiting any and all (signalled), a retry whose failed attempt
    changed its state in place, and a fresh row; each claimed row's state (parsed from the
    claim's text) and pack are its own, and the rows not signalled enough stay out. The
    same with the pick loop's claim at once (its packs built after the lease committed)."""

    def state(n: int, mode: str) -> dict[str, Any]:
        return {"n": n, "mode": mode, "deep": {"seen": [n, str(n)], "nested": {"k": n}}}

    with Session(engine) as s, s.begin():
        ids = {
            name: durable.insert(s, Carrier, state=state(n, mode))
            for n, (name, mode) in enumerate(
                [
                    ("any_signalled", "any"),
                    ("any_silent", "any"),
                    ("all_both", "all"),
                    ("all_one", "all"),
                    ("retrying", "fail"),
                ]
            )
        }
    drain(engine, fsms=[Carrier])  # the awaits park; the failing one is scheduled to retry
    advance(engine, 3600)  # the retry is due: the scheduler's pass makes it runnable
    with engine.begin() as conn:
        store.maintenance.stage_due(conn, 1000, None)
    with Session(engine) as s, s.begin():
        _send(s, ids["any_signalled"], "x")
        _send(s, ids["all_both"], "a", "b")
        _send(s, ids["all_one"], "a")
        ids["fresh"] = durable.insert(s, Carrier, state=state(5, "plain"))
    expected_states = {
        name: state(n, mode)
        for name, n, mode in [
            ("any_signalled", 0, "any"),
            ("all_both", 2, "all"),
            ("retrying", 4, "fail"),
            ("fresh", 5, "plain"),
        ]
    }
    session = (store.claims.begin_claim_session, store.claims.end_claim_session)
    held = HeldConnection(engine, session=session)
    try:
        claimed = claiming.claim(held, "default", [Carrier.name], 50, "mixed", 30, at_once=at_once)
    finally:
        held.close()

    by_id = {c.id: c for c in claimed}
    assert set(by_id) == {ids[name] for name in expected_states}
    for name, want in expected_states.items():
        row = by_id[ids[name]]
        assert row.stored_state() == want, name
        assert row.stored_state() is not row.stored_state()  # each use its own copy
    assert [s.name for s in by_id[ids["any_signalled"]].awaited] == ["x"]
    assert sorted(s.name for s in by_id[ids["all_both"]].awaited) == ["a", "b"]
    assert by_id[ids["retrying"]].awaited == () and by_id[ids["fresh"]].awaited == ()
    assert (by_id[ids["retrying"]].attempt, by_id[ids["fresh"]].attempt) == (2, 1)
