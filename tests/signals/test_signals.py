"""Signals and await: sets, packs, timeouts, signal-with-start, dedup, result(), leftovers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _support.helpers import (
    backend_waiting_on_lock,
    scalar,
    snapshot,
    transition_for,
    wait_status,
    wait_until,
)
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Fail, Job, Runner, store
from gen_durable.errors import InstanceFailed, NotFound, ResultTimeout, ValidationError

FAST = {"lease": 5.0, "poll_interval": 0.2, "grace": 2.0}


def send(engine: Engine, target: int | str, name: str, payload: Any = None, **kw: Any) -> Any:
    with Session(engine) as s, s.begin():
        return durable.signal(s, target, name, payload, **kw)


def insert(engine: Engine, cls: Any, **kw: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kw)


class Both(FSM):
    name = "sig.Both"
    steps = ("wait", "go")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("a", "b", all=True, then="go")

    def go(self, ctx: durable.Context) -> Done:
        return Done([(s.name, s.payload) for s in ctx.awaited])


def test_await_all_resumes_only_once_every_signal_is_pending(engine: Engine) -> None:
    iid = insert(engine, Both)
    with Runner(engine, **FAST):
        wait_status(engine, iid, "awaiting")
        send(engine, iid, "b", 1)
        send(engine, iid, "b", 2)
        assert snapshot(engine, iid).status == "awaiting"
        send(engine, iid, "a", 3)
        done = wait_status(engine, iid, "done")
    assert done.result == [["b", 1], ["b", 2], ["a", 3]]  # arrival order


class Collector(FSM):
    """Collects ``want`` events in packs of at most ``limit``."""

    name = "sig.Collector"
    steps = ("wait", "collect")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("e", then="collect", limit=ctx.state.get("limit"))

    def collect(self, ctx: durable.Context) -> Any:
        got = ctx.state.setdefault("got", [])
        got.append([s.payload for s in ctx.awaited])
        if sum(len(pack) for pack in got) >= ctx.state["want"]:
            return Done(got)
        return Await("e", then="collect", limit=ctx.state.get("limit"))


def test_a_pack_delivers_every_pending_match_at_once_in_arrival_order(engine: Engine) -> None:
    iid = insert(engine, Collector, state={"want": 5})
    for n in range(5):
        send(engine, iid, "e", n)
    send(engine, iid, "other", "ignored")
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert done.result == [[0, 1, 2, 3, 4]]
    consumed = {s.name: s.consumed_at is not None for s in done.signals}
    assert consumed == {"e": True, "other": False}  # never awaited: kept, pending


def test_limit_caps_each_pack_and_leaves_the_rest_pending(engine: Engine) -> None:
    iid = insert(engine, Collector, state={"want": 5, "limit": 2})
    for n in range(5):
        send(engine, iid, "e", n)
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert done.result == [[0, 1], [2, 3], [4]]


def test_a_pack_of_1000_signals_takes_a_bounded_number_of_statements(engine: Engine) -> None:
    iid = insert(engine, Collector, state={"want": 1000})
    with Session(engine) as s, s.begin():
        for n in range(1000):
            durable.signal(s, iid, "e", n)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with Runner(engine, **FAST):
            done = wait_status(engine, iid, "done")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert done.result == [list(range(1000))]  # one pack, in arrival order
    on_signals = [s for s in statements if "gd_signals" in s]
    assert len(on_signals) < 10, on_signals  # bounded: not one statement per signal


class Approval(FSM):
    name = "sig.Approval"
    steps = ("ask", "approved", "expired")

    def ask(self, ctx: durable.Context) -> Await:
        return Await("approve", then="approved", timeout=ctx.state["t"], on_timeout="expired")

    def approved(self, ctx: durable.Context) -> Done:
        return Done(ctx.awaited[0].payload)

    def expired(self, ctx: durable.Context) -> Fail:
        return Fail(f"expired with {len(ctx.awaited)} signals")


def _park(engine: Engine, timeout: float) -> int:
    """An Approval parked on its await, committed by hand (no runner)."""
    iid = insert(engine, Approval, state={"t": timeout})
    with engine.begin() as conn:
        row = store.claims.claim(conn, "default", ["sig.Approval"], 1, "t", 30, None)[0]
    parked = transition_for(
        row,
        kind="await",
        status="awaiting",
        step="approved",
        delay=timeout,
        await_names=("approve",),
        timeout_step="expired",
    )
    with engine.begin() as conn:
        assert store.transitions.commit(conn, [parked], None)[iid].status == "awaiting"
    return iid


def test_timeout_race_the_signal_holds_the_row_first_and_wins(engine: Engine) -> None:
    iid = _park(engine, 0.0)  # due at once
    with Session(engine) as sender:
        sender.begin()
        durable.signal(sender, iid, "approve", "yes")  # row locked, woken in this txn
        with engine.begin() as conn:  # the timer skips the locked row
            assert store.maintenance.stage_due(conn, 10, None) == []
        sender.commit()
    with engine.begin() as conn:  # and later finds it no longer awaiting
        assert store.maintenance.stage_due(conn, 10, None) == []
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.awaiting) == ("available", "approved", ("approve",))


def test_timeout_race_the_timer_holds_the_row_first_and_wins(engine: Engine) -> None:
    iid = _park(engine, 0.0)
    with engine.connect() as timer:
        tx = timer.begin()
        assert store.maintenance.stage_due(timer, 10, None) == ["default"]
        done: dict[str, Any] = {}

        def send_late() -> None:
            done["result"] = send(engine, iid, "approve", "too late")

        t = threading.Thread(target=send_late)
        t.start()
        backend_waiting_on_lock(engine)
        tx.commit()
        t.join(10)
    assert done["result"].instance_id == iid
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.awaiting) == ("available", "expired", None)
    assert [s.consumed_at for s in snap.signals] == [None]  # kept for later, not lost


def test_timeout_fires_with_an_empty_pack_when_no_signal_comes(engine: Engine) -> None:
    iid = insert(engine, Approval, state={"t": 0.2})
    with Runner(engine, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert failed.error == {"type": "Fail", "message": "expired with 0 signals"}


class Order(FSM):
    name = "sig.Order"
    steps = ("start", "paid")

    def start(self, ctx: durable.Context) -> Await:
        return Await("paid", then="paid")

    def paid(self, ctx: durable.Context) -> Done:
        return Done({"order": ctx.state["order"], "payments": [s.payload for s in ctx.awaited]})


def test_signal_with_start_creates_the_instance_and_delivers(engine: Engine) -> None:
    first = send(engine, "order:42", "paid", {"n": 1}, start=(Order, {"order": 42}))
    again = send(engine, "order:42", "paid", {"n": 2}, start=(Order, {"order": 42}))
    assert first.started and not again.started
    assert first.instance_id == again.instance_id
    with Runner(engine, **FAST):
        done = wait_status(engine, first.instance_id, "done")
    assert done.result == {"order": 42, "payments": [{"n": 1}, {"n": 2}]}
    assert done.correlation_key == "order:42"


def test_concurrent_signal_with_start_makes_one_instance_and_keeps_every_signal(
    engine: Engine,
) -> None:
    with Session(engine) as holder:
        holder.begin()
        first = durable.signal(holder, "order:7", "paid", 0, start=(Order, {"order": 7}))
        with ThreadPoolExecutor(6) as pool:
            futures = [
                pool.submit(send, engine, "order:7", "paid", n, start=(Order, {"order": 7}))
                for n in range(1, 7)
            ]
            backend_waiting_on_lock(engine)
            holder.commit()
            results = [f.result(10) for f in futures]
    assert {r.instance_id for r in results} == {first.instance_id}
    assert not any(r.started for r in results)
    snap = snapshot(engine, "order:7")
    assert sorted(s.payload for s in snap.signals) == list(range(7))
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 1


def test_signal_with_start_validates_before_writing(engine: Engine) -> None:
    with pytest.raises(ValidationError):
        send(engine, 5, "paid", start=(Order, {"order": 1}))  # needs a key
    with pytest.raises(ValidationError):
        send(engine, "k", "paid", start=Order.new(state={"order": 1}, correlation_key="other"))
    with pytest.raises(NotFound):
        send(engine, "k", "paid")
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 0


class Quick(Job):
    name = "sig.Quick"

    def perform(self, args: Any) -> Any:
        if args.get("fail"):
            raise RuntimeError("nope")
        return {"echo": args["x"]}


def test_dedup_window_treats_a_recently_finished_instance_as_live(engine: Engine) -> None:
    iid = insert(engine, Quick, args={"x": 1}, correlation_key="webhook:1")
    with Runner(engine, **FAST):
        wait_status(engine, iid, "done")
    again = insert(engine, Quick, args={"x": 2}, correlation_key="webhook:1", dedup_window=3600)
    assert again == iid
    fresh = insert(engine, Quick, args={"x": 3}, correlation_key="webhook:1")
    assert fresh != iid
    late = send(engine, "webhook:9", "paid", 1, start=(Quick, {"x": 4}), dedup_window=60)
    assert late.started


def test_result_waits_for_the_finish_woken_by_notification(engine: Engine) -> None:
    with Runner(engine, **FAST):
        iid = insert(engine, Quick, args={"x": 5}, correlation_key="q:5")
        # a poll far longer than the timeout: only the notification can wake it in time
        assert durable.result(engine, "q:5", timeout=20, poll_interval=60) == {"echo": 5}
        bad = insert(engine, Quick, args={"x": 6, "fail": True}, max_attempts=1)
        with pytest.raises(InstanceFailed) as info:
            durable.result(engine, bad, timeout=20, poll_interval=60)
        assert info.value.status == "failed"
    waiting = insert(engine, Order, state={"order": 1})
    with pytest.raises(ResultTimeout):
        durable.result(engine, waiting, timeout=0.3)
    assert snapshot(engine, iid).result == {"echo": 5}


def test_leftover_signals_are_kept_then_pruned_with_their_instance_by_gc(engine: Engine) -> None:
    iid = insert(engine, Quick, args={"x": 1})
    send(engine, iid, "never-awaited", 1)
    with Runner(engine, **FAST):
        wait_status(engine, iid, "done")
    send(engine, iid, "after-finish", 2)
    assert [s.name for s in snapshot(engine, iid).signals] == ["never-awaited", "after-finish"]
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE gen_durable.gd_instances SET finished_at = now() - interval '2 days'")
        )
    with Runner(engine, gc_retention=3600, gc_interval=0.1, **FAST):
        wait_until(lambda: scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 0)
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_signals") == 0


class Inbox(FSM):
    name = "sig.Inbox"
    steps = ("wait", "take")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("msg", then="take")

    def take(self, ctx: durable.Context) -> Any:
        ctx.state["got"] = ctx.state.get("got", []) + [s.payload for s in ctx.awaited]
        if len(ctx.state["got"]) >= 10:
            return Done(ctx.state["got"])
        return Await("msg", then="take")


def test_1000_instances_each_get_their_10_signals_from_concurrent_senders(
    engine: Engine,
) -> None:
    keys = [f"inbox:{n}" for n in range(1000)]
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Inbox.new(correlation_key=k) for k in keys])

    def sender(part: int) -> None:
        for k in keys[part::4]:
            for m in range(10):
                with Session(engine) as s, s.begin():
                    durable.signal(s, k, "msg", f"{k}#{m}")

    with (
        Runner(engine, queues={"default": 8}, **FAST),
        Runner(engine, queues={"default": 8}, **FAST),
    ):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(sender, range(4)))
        wait_until(
            lambda: (
                scalar(
                    engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'"
                )
                == 1000
            ),
            timeout=180,
        )
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT correlation_key, result FROM gen_durable.gd_instances")
        ).all()
    for key, result in rows:
        assert sorted(result) == sorted(f"{key}#{m}" for m in range(10)), key
    assert (
        scalar(engine, "SELECT count(*) FROM gen_durable.gd_signals WHERE consumed_at IS NULL") == 0
    )


class Snooze(FSM):
    name = "sig.Snooze"
    steps = ("nap", "wake")

    def nap(self, ctx: durable.Context) -> Any:
        from gen_durable import Sleep

        return Sleep(1.0, then="wake")

    def wake(self, ctx: durable.Context) -> Done:
        return Done("woke")


def test_a_timer_survives_the_runner_that_set_it(engine: Engine) -> None:
    iid = insert(engine, Snooze)
    with Runner(engine, **FAST):
        sleeping = wait_status(engine, iid, "scheduled")
    assert sleeping.step == "wake"
    assert snapshot(engine, iid).status == "scheduled"  # no runner: it waits in its row
    with Runner(engine, listen=False, **FAST):  # a new runner, polling only
        done = wait_status(engine, iid, "done")
    assert done.result == "woke" and done.finished_at >= sleeping.run_at
