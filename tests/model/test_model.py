"""The reference model, rule by rule, on hand-written cases (no database).

Each test gives one instance's events — what was observed under its row lock: the
transitions committed so far (``h``) and its status — and pins what the model computes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Cancel, Done, Job, Next, RateLimited, Spawn
from gen_durable.errors import RateLimitedError
from model import workload
from model.flows import CLASSES, TOP
from model.model import run
from model.records import ChildOutcome, Commit, Event, Sig, Unpredictable

QUICK = Backoff(base=0.01, factor=1.0, max=0.01, jitter=0.0)


class Boom(Exception):
    pass


def send(h: int, status: str, *signals: tuple[int, str] | tuple[int, str, str]) -> Event:
    return Event("send", h, status, tuple(Sig(*s) for s in signals))


def at(kind: str, h: int, status: str) -> Event:
    return Event(kind, h, status)


class Waiter(FSM):
    """``wait`` awaits what ``state["await"]`` says; ``got`` records its pack and finishes,
    raising on the attempts in ``state["boom"]`` and rate limited on the runs in
    ``state["slow"]`` (counted by the transitions already committed at its version)."""

    name = "model.test.Waiter"
    steps = ("wait", "got", "late")
    max_attempts = 3
    backoff = QUICK

    def step(self, name: str, ctx: Any) -> Any:
        wait = dict(ctx.state["await"])
        names = wait.pop("signals")
        if name == "wait":
            return Await(*names, then="got", **wait)
        if name == "got" and ctx.attempt in ctx.state.get("boom", ()):
            raise Boom(f"attempt {ctx.attempt}")
        if ctx.prior in ctx.state.get("slow", ()):
            return RateLimited(retry_after=0.01)
        ctx.state.setdefault("packs", []).append([s.id for s in ctx.awaited])
        if len(ctx.state["packs"]) < ctx.state.get("rounds", 1):
            return Await(*names, then=name, **wait)
        return Done({"step": name, "packs": ctx.state["packs"]})

    def on_error(self, name: str, error: BaseException, ctx: Any) -> Any:
        return Next("late") if ctx.state.get("compensate") else None


def waiter(*names: str, events: list[Event], **options: Any) -> Any:
    keys = ("all", "limit", "timeout", "on_timeout")
    wait = {"signals": names, **{k: options.pop(k) for k in keys if k in options}}
    return run(Waiter, {"await": wait, **options}, events)


def test_any_of_resumes_on_one_name_with_the_pending_awaited_signals_in_id_order() -> None:
    events = [send(1, "awaiting", (7, "b")), send(1, "available", (8, "x"), (9, "a"))]
    trail = waiter("a", "b", events=events)
    assert trail.commits[0] == Commit(0, 1, "wait", "await", "got", "awaiting")
    assert trail.runs[1].pack == (7, 9)  # "x" is not awaited: it stays pending
    assert trail.result == {"step": "got", "packs": [[7, 9]]}
    assert trail.consumed == {7: 2, 9: 2}
    assert trail.stored == {7: "b", 8: "x", 9: "a"}


def test_all_of_waits_for_every_name() -> None:
    events = [send(1, "awaiting", (3, "a"), (4, "a")), send(1, "awaiting", (5, "b"))]
    trail = waiter("a", "b", all=True, events=events)
    assert trail.runs[1].pack == (3, 4, 5)
    assert trail.status == "done"
    parked = waiter("a", "b", all=True, events=events[:1])
    assert (parked.status, parked.problem) == ("awaiting", None)


def test_an_all_of_waiter_woken_without_its_signals_is_a_divergence() -> None:
    # The engine reported the instance runnable while only "a" was pending (bug 1).
    trail = waiter("a", "b", all=True, events=[send(1, "awaiting", (3, "a")), send(1, "available")])
    assert trail.problem is not None and "awaiting" in trail.problem


def test_limit_caps_the_pack_and_the_rest_waits_for_the_next_await() -> None:
    sigs = [(n, "v") for n in range(1, 6)]
    trail = waiter("v", limit=2, rounds=3, events=[send(0, "available", *sigs)])
    assert [r.pack for r in trail.runs] == [(), (1, 2), (3, 4), (5,)]
    assert trail.consumed == {1: 2, 2: 2, 3: 3, 4: 3, 5: 4}


def test_a_signal_sent_before_the_await_is_delivered_without_parking() -> None:
    trail = waiter("a", events=[send(0, "running", (11, "a"))])
    assert [c.status for c in trail.commits] == ["awaiting", "done"]
    assert trail.runs[1].pack == (11,)


def test_a_retried_step_gets_its_first_pack_whatever_arrived_meanwhile() -> None:
    events = [send(1, "awaiting", (1, "a")), send(2, "scheduled", (2, "a"))]
    trail = waiter("a", boom=[1], events=events)
    assert [(r.attempt, r.pack) for r in trail.runs[1:]] == [(1, (1,)), (2, (1,))]
    assert [c.kind for c in trail.commits] == ["await", "retry", "done"]
    assert trail.consumed == {1: 2}  # 2 stays pending


def test_rate_limited_uses_no_attempt_and_keeps_the_pack() -> None:
    events = [send(1, "awaiting", (1, "a")), send(2, "scheduled", (2, "a"))]
    trail = waiter("a", slow=[0, 1], events=events)
    assert [(r.attempt, r.pack) for r in trail.runs[1:]] == [(1, (1,))] * 3
    assert [(c.kind, c.attempt) for c in trail.commits[1:]] == [
        ("rate_limited", 1),
        ("rate_limited", 1),
        ("done", 1),
    ]


def test_after_the_last_attempt_on_error_compensates_or_the_instance_fails() -> None:
    events = [send(1, "awaiting", (1, "a"))]
    failed = waiter("a", boom=[1, 2, 3], events=events)
    assert [(c.kind, c.version, c.attempt) for c in failed.commits[1:]] == [
        ("retry", 1, 1),
        ("retry", 1, 2),
        ("error", 1, 3),
    ]
    assert (failed.status, failed.error, failed.version, failed.consumed) == (
        "failed",
        "Boom",
        1,
        {},
    )
    saved = waiter("a", boom=[1, 2, 3], compensate=True, events=events)
    assert saved.commits[3] == Commit(1, 3, "got", "next", "late", "available")
    assert saved.consumed == {1: 2}  # the compensation moves on: it consumes the pack


def test_a_retry_from_outside_reruns_the_failed_step_with_its_pack_and_fresh_attempts() -> None:
    events = [send(1, "awaiting", (1, "a")), send(4, "failed", (2, "a")), at("retry", 4, "failed")]
    trail = waiter("a", boom=[1, 2, 3], events=events)  # it fails the same way again
    assert [(r.attempt, r.pack) for r in trail.runs[1:]] == [(a, (1,)) for a in (1, 2, 3) * 2]
    assert [c.kind for c in trail.commits[-3:]] == ["retry", "retry", "error"]
    assert (trail.status, trail.version, trail.consumed) == ("failed", 1, {})


def test_a_timeout_resumes_at_on_timeout_or_then_with_an_empty_pack() -> None:
    trail = waiter("a", timeout=1, on_timeout="late", events=[at("timeout", 1, "awaiting")])
    assert (trail.runs[1].step, trail.runs[1].pack, trail.result["step"]) == ("late", (), "late")
    assert trail.commits[1] == Commit(1, 0, "wait", "timeout", "late", "available")
    plain = waiter("a", timeout=1, events=[at("timeout", 1, "awaiting")])
    assert plain.result == {"step": "got", "packs": [[]]}
    assert plain.commits[1] == Commit(1, 0, "wait", "timeout", "got", "available")


def test_a_pending_signal_wins_over_the_timeout() -> None:
    events = [send(0, "available", (1, "a")), at("timeout", 1, "awaiting")]
    trail = waiter("a", timeout=1, events=events)
    assert trail.problem is not None  # it never parked: no timer can fire


def test_a_crash_uses_the_attempt_and_the_rerun_gets_the_same_pack() -> None:
    events = [
        send(1, "awaiting", (1, "a")),
        at("crash", 1, "running"),
        send(1, "available", (2, "a")),
    ]
    trail = waiter("a", events=events)
    assert [(r.attempt, r.pack, r.end) for r in trail.runs[1:]] == [
        (1, (1,), "crash"),
        (2, (1,), "commit"),
    ]
    assert trail.commits[-1].attempt == 2


def test_a_crash_on_the_last_attempt_fails_without_on_error() -> None:
    crashes = [at("crash", 1, "running") for _ in range(3)]
    trail = waiter("a", compensate=True, events=[send(0, "available", (1, "a")), *crashes])
    assert (trail.status, trail.error, len(trail.commits)) == ("failed", "LeaseExpired", 2)
    assert trail.commits[-1] == Commit(1, 3, "got", "lease_expired", None, "failed")


def test_cancel_while_parked_then_retry_resumes_the_await() -> None:
    events = [
        at("cancel", 1, "awaiting"),
        send(2, "cancelled", (5, "a")),  # sent while cancelled: it wakes the retried await
        at("retry", 2, "cancelled"),
    ]
    trail = waiter("a", "b", events=events, all=True)
    assert trail.commits[1] == Commit(1, 0, "got", "outside_cancel", None, "cancelled")
    assert trail.status == "awaiting" and [r.step for r in trail.runs] == ["wait"]
    trail = waiter("a", "b", events=[*events, send(2, "awaiting", (6, "b"))], all=True)
    assert [(r.step, r.pack, r.attempt) for r in trail.runs] == [
        ("wait", (), 1),
        ("got", (5, 6), 1),
    ]
    assert trail.status == "done" and trail.consumed == {5: 2, 6: 2}


def test_cancel_while_parked_with_its_signals_pending_then_retry_runs_at_once() -> None:
    events = [
        at("cancel", 1, "awaiting"),
        send(2, "cancelled", (5, "a")),
        at("retry", 2, "cancelled"),
    ]
    trail = waiter("a", events=events)
    assert [(r.step, r.pack) for r in trail.runs] == [("wait", ()), ("got", (5,))]
    assert trail.status == "done"


def test_cancel_while_a_step_runs_with_its_pack_then_retry_gives_it_the_same_pack() -> None:
    events = [
        send(0, "available", (1, "a")),
        at("cancel", 1, "running"),
        send(2, "cancelled", (2, "a")),
        at("retry", 2, "cancelled"),
    ]
    trail = waiter("a", events=events)
    assert [(r.step, r.pack, r.end) for r in trail.runs][1:] == [
        ("got", (1,), "abort"),
        ("got", (1,), "commit"),
    ]
    assert trail.consumed == {1: 2}  # the leftover 2 stays pending


def test_cancel_while_running_fences_the_step_out() -> None:
    trail = waiter("a", events=[send(0, "available", (1, "a")), at("cancel", 1, "running")])
    assert trail.runs[-1].end == "abort"
    assert (trail.status, len(trail.commits), trail.consumed) == ("cancelled", 2, {})
    assert trail.commits[-1] == Commit(1, 1, "got", "outside_cancel", None, "cancelled")
    cascade = waiter("a", events=[send(0, "available", (1, "a")), at("cascade", 1, "running")])
    assert (cascade.status, len(cascade.commits)) == ("cancelled", 1)  # no row of its own


def test_a_repeated_idempotency_key_is_stored_once() -> None:
    events = [send(0, "available", (1, "a", "k"), (1, "a", "k"), (2, "a", "j"))]
    trail = waiter("a", events=events)
    assert trail.sends == [(1, False), (1, True), (2, False)]
    assert trail.runs[1].pack == (1, 2)


class Job1(Job):
    name = "model.test.Job1"
    max_attempts = 2
    backoff = QUICK

    def perform(self, args: Any, ctx: Any) -> Any:
        if ctx.attempt in args.get("boom", ()):
            raise Boom("job")
        if args.get("slow") and ctx.prior == 0:
            raise RateLimitedError(0.01)
        if args.get("fail"):
            return durable.Fail("no")
        return {"tag": args["tag"], "prior": ctx.prior}


class Parent(FSM):
    name = "model.test.Parent"
    steps = ("fan", "join")

    def fan(self, ctx: Any) -> Any:
        kids = [Job1.new(args={"tag": n}) for n in range(ctx.state["kids"])]
        return Spawn(kids, then="join", on_failure=ctx.state["policy"])

    def join(self, ctx: Any) -> Any:
        return Done([[c.status, c.result] for c in ctx.children])


def parent(policy: str, outcomes: list[ChildOutcome | None], events: list[Event] = ()) -> Any:
    return run(Parent, {"kids": len(outcomes), "policy": policy}, events, lambda v, s: outcomes)


def test_jobs_finish_with_what_perform_returns() -> None:
    trail = run(Job1, {"tag": 3, "slow": True}, [])
    assert [c.kind for c in trail.commits] == ["rate_limited", "done"]
    assert trail.result == {"tag": 3, "prior": 1}
    assert run(Job1, {"tag": 1, "boom": [1, 2]}, []).error == "Boom"


def test_spawn_wait_resumes_once_every_child_finished() -> None:
    done, failed = ChildOutcome("done", 1), ChildOutcome("failed", None, "Boom")
    trail = parent("wait", [done, failed])
    assert trail.result == [["done", 1], ["failed", None]]
    assert [c.kind for c in trail.commits] == ["spawn", "done"]
    stuck = parent("wait", [done, None])
    assert (stuck.status, len(stuck.commits)) == ("awaiting", 1)


def test_fail_fast_and_cancel_rest_resume_at_the_failure() -> None:
    failed, held = ChildOutcome("failed", None, "Fail"), ChildOutcome("done", 1, holds=True)
    assert parent("fail_fast", [held, failed]).result == [["unfinished", None], ["failed", None]]
    gone = ChildOutcome("cancelled", None, "Cancel", holds=True)
    assert parent("cancel_rest", [gone, failed]).result == [["cancelled", None], ["failed", None]]
    with pytest.raises(Unpredictable):  # a sibling that may or may not have finished by then
        parent("fail_fast", [ChildOutcome("done", 1), failed])


def test_cancelling_a_parent_parked_on_its_children_then_retrying_it() -> None:
    gone = ChildOutcome("cancelled", None, "Cancel")
    events = [at("cancel", 1, "awaiting"), at("retry", 2, "cancelled")]
    trail = parent("wait", [gone, ChildOutcome("done", 2)], events)
    assert trail.result == [["cancelled", None], ["done", 2]]


class Looper(FSM):
    name = "model.test.Looper"
    steps = ("a", "b")

    def a(self, ctx: Any) -> Any:
        return Next("b", delay=1) if ctx.version == 0 else Cancel("enough")

    def b(self, ctx: Any) -> Any:
        return Next("nowhere")


def test_an_outcome_naming_an_undeclared_step_fails_the_attempt() -> None:
    trail = run(Looper, {}, [])
    assert [(c.kind, c.status) for c in trail.commits] == [("next", "scheduled")] + [
        ("retry", "scheduled")
    ] * 9 + [("error", "failed")]
    assert trail.error == "InvalidOutcome"


# -- the model's own invariants, on generated scripts (hypothesis shrinks a failure) ---------


@st.composite
def scripted(draw: Any) -> tuple[Any, dict[str, Any], list[Event]]:
    """A workload script, and signals of the shared names all sent before its first step."""
    cls = draw(st.sampled_from(TOP))
    script = draw(workload.scripts(cls, "prop:0", 1))
    names = draw(st.lists(st.sampled_from(workload.SENT), max_size=12))
    sends = [send(0, "available", *((n + 1, name) for n, name in enumerate(names)))]
    return CLASSES[cls], {"script": script, "seen": []}, sends if names else []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripted())
def test_packs_hold_pending_awaited_signals_once_each(case: Any) -> None:
    cls, state, events = case
    trail = run(cls, state, events)
    assert trail.problem is None
    consumed: list[int] = []
    for before, run_ in zip([None, *trail.runs], trail.runs, strict=False):
        assert list(run_.pack) == sorted(run_.pack)
        assert {trail.stored[i] for i in run_.pack} <= set(workload.NAMES)
        if before is not None and before.version == run_.version:
            assert run_.pack == before.pack  # every run of a step gets its first pack
        elif run_.end == "commit":
            consumed += run_.pack
    assert sorted(trail.consumed) == sorted(set(trail.consumed))
    assert set(trail.consumed) <= set(consumed)
