"""A retry resumes a cancelled instance where the cancel found it: parked on its ``Await``
(its signals, those sent while it was cancelled included, and its deadline), asleep until
its time, or with the pack its step had been given — never running an awaited step with an
empty pack. Instances in different situations are retried and then drained together."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _support.helpers import backend_waiting_on_lock, snapshot
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Sleep
from gen_durable.testing import advance, drain

FAILED_ONCE: set[int] = set()


class Gate(FSM):
    name = "resume.Gate"
    steps = ("wait", "go", "expired")

    def wait(self, ctx: durable.Context) -> Await:
        if "timeout" in ctx.state:
            return Await("a", "b", all=True, then="go", timeout=600, on_timeout="expired")
        return Await("a", "b", all=True, then="go")

    def go(self, ctx: durable.Context) -> Done:
        if ctx.state.get("raise") and ctx.instance_id not in FAILED_ONCE:
            FAILED_ONCE.add(ctx.instance_id)
            raise RuntimeError("the first run of go fails")
        return Done([s.payload for s in ctx.awaited])

    def expired(self, ctx: durable.Context) -> Done:
        return Done(["expired", len(ctx.awaited)])


class Napper(FSM):
    name = "resume.Napper"
    steps = ("nap", "up")

    def nap(self, ctx: durable.Context) -> Sleep:
        return Sleep(3600, then="up")

    def up(self, ctx: durable.Context) -> Done:
        return Done("up")


class Retrying(Gate):
    name = "resume.Retrying"
    backoff = Backoff(base=3600, factor=1.0, max=3600, jitter=0.0)


def _call(engine: Engine, fn: Any, *args: Any, **kw: Any) -> Any:
    with Session(engine) as s, s.begin():
        return fn(s, *args, **kw)


def _new(engine: Engine, cls: type[FSM], **state: Any) -> int:
    iid: int = _call(engine, durable.insert, cls, state=state)
    return iid


def test_a_retried_await_waits_again_and_wakes_on_its_own_signals(engine: Engine) -> None:
    half, full, untouched, left = (_new(engine, Gate) for _ in range(4))
    drain(engine)
    for iid in (half, full):
        _call(engine, durable.signal, iid, "a", f"a{iid}")
    for iid in (half, full, left):
        assert _call(engine, durable.cancel, iid)
    _call(engine, durable.signal, full, "b", f"b{full}")  # sent while it was cancelled
    for iid in (half, full):
        _call(engine, durable.retry, iid)

    snaps = {iid: snapshot(engine, iid) for iid in (half, full, untouched, left)}
    assert (snaps[half].status, snaps[half].awaiting) == ("awaiting", ("a", "b"))
    assert snaps[full].status == "available"  # its signals were all there: woken at once
    assert [r.step for r in drain(engine)] == ["go"]
    assert snapshot(engine, full).result == [f"a{full}", f"b{full}"]

    _call(engine, durable.signal, untouched, "a", f"a{untouched}")
    for iid in (half, untouched):
        _call(engine, durable.signal, iid, "b", f"b{iid}")
    assert sorted(r.instance_id for r in drain(engine)) == [half, untouched]
    for iid in (half, untouched):
        assert snapshot(engine, iid).result == [f"a{iid}", f"b{iid}"]
    assert snapshot(engine, left).status == "cancelled"


@pytest.mark.parametrize(
    ("cls", "state", "status", "seconds", "result"),
    [
        (Gate, {"timeout": True}, "awaiting", 600, ["expired", 0]),
        (Napper, {}, "scheduled", 3600, "up"),
    ],
    ids=["await-timeout", "sleep"],
)
def test_a_retried_timer_keeps_its_time(
    engine: Engine, cls: type[FSM], state: dict[str, Any], status: str, seconds: int, result: Any
) -> None:
    """An await's deadline and a Sleep's end survive a cancel and a retry."""
    iid = _new(engine, cls, **state)
    drain(engine)
    due = snapshot(engine, iid).run_at
    _call(engine, durable.cancel, iid)
    _call(engine, durable.retry, iid)
    snap = snapshot(engine, iid)
    assert (snap.status, snap.run_at) == (status, due)
    assert drain(engine) == []
    advance(engine, seconds)
    drain(engine)
    assert snapshot(engine, iid).result == result


def test_a_step_cancelled_while_backing_off_gets_its_first_pack_again(engine: Engine) -> None:
    FAILED_ONCE.clear()
    iid = _new(engine, Retrying, **{"raise": True})
    drain(engine)
    _call(engine, durable.signal, iid, "a", "a1")
    _call(engine, durable.signal, iid, "b", "b1")
    drain(engine)  # go fails with its pack, backs off for an hour
    assert snapshot(engine, iid).status == "scheduled"
    _call(engine, durable.signal, iid, "a", "a2")  # newer: not in the pack
    _call(engine, durable.cancel, iid)
    _call(engine, durable.retry, iid)
    assert snapshot(engine, iid).status == "scheduled"  # the backoff goes on
    advance(engine, 3600)
    drain(engine)
    snap = snapshot(engine, iid)
    assert snap.result == ["a1", "b1"]
    assert [s.payload for s in snap.signals if s.consumed_at is None] == ["a2"]


@pytest.mark.parametrize("first", ["signal", "retry"])
def test_a_signal_racing_the_retry_wakes_it_whichever_commits_first(
    engine: Engine, first: str
) -> None:
    """The retry parks the row, then checks its signals in a statement of its own, as a
    parking commit does: a sender holding the row lock commits its signal before that
    check sees it; a sender waiting on the retry's lock finds the row awaiting."""
    iid = _new(engine, Gate)
    drain(engine)
    _call(engine, durable.signal, iid, "a", "a")
    _call(engine, durable.cancel, iid)
    retry = (durable.retry, iid)
    signal = (durable.signal, iid, "b", "b")
    held, blocked = (signal, retry) if first == "signal" else (retry, signal)
    with Session(engine) as holder:
        holder.begin()
        held[0](holder, *held[1:])
        worker = threading.Thread(target=_call, args=(engine, *blocked))
        worker.start()
        backend_waiting_on_lock(engine)
        holder.commit()
        worker.join(10)
    assert snapshot(engine, iid).status == "available"
    drain(engine)
    assert snapshot(engine, iid).result == ["a", "b"]
