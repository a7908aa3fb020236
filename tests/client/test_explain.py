"""explain() and ``gen-durable why``: why an instance is not running, against real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import datetime
from typing import Any

import pytest
from _support.helpers import TESTS
from procs.cli_app import Gate
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Fail, Job, Spawn, store
from gen_durable.errors import NotFound, ValidationError
from gen_durable.runtime import claiming
from gen_durable.testing import StepLimitExceeded, advance, drain


class Order(FSM):
    name = "why.Order"
    queue = "orders"
    steps = ("start", "ship", "late")

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Await("paid", "packed", then="ship", all=True, timeout=600, on_timeout="late")
        return Done("shipped") if name == "ship" else Fail("too late")


class Flaky(Job):
    name = "why.Flaky"
    backoff = Backoff(base=120, jitter=0)

    def perform(self, args: Any) -> None:
        raise ConnectionError("upstream down")


class Quick(Job):
    name = "why.Quick"

    def perform(self, args: Any) -> str:
        return "quick"


class Parent(FSM):
    name = "why.Parent"
    steps = ("start", "join")

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Spawn([Quick.new(), Quick.new()], then="join")
        return Done(None)


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


def explain(engine: Engine, target: int | str, **kwargs: Any) -> durable.Explanation:
    with Session(engine) as s:
        return durable.explain(s, target, **kwargs)


def runner_node(engine: Engine, node_id: str, queues: dict[str, int], fsms: list[str]) -> None:
    """Register a live runner the way Runner.start does (its heartbeat row)."""
    with engine.begin() as conn:
        store.maintenance.upsert_node(
            conn, node_id, socket.gethostname(), os.getpid(), queues, fsms, None
        )


def test_awaiting_signals_names_what_is_pending_and_what_is_missing(engine: Engine) -> None:
    iid = insert(engine, Order, correlation_key="order:1")
    drain(engine)
    with Session(engine) as s, s.begin():
        durable.signal(s, "order:1", "paid")
        durable.signal(s, "order:1", "payed")  # a typo: stored, but not awaited
    why = explain(engine, "order:1")
    assert why.instance_id == iid and why.reason == "awaiting_signals"
    assert why.status == "awaiting" and why.step == "ship"
    assert why.awaiting == ("paid", "packed") and why.await_all is True
    assert why.pending_signals == ("paid", "payed")
    assert why.run_at is not None and why.run_at > why.checked_at
    assert "is waiting for signal all of 'paid', 'packed'" in why.summary
    assert "Already pending: 'paid'; still missing: 'packed'." in why.summary
    assert "Other pending signals (not awaited): 'payed'." in why.summary
    assert "times out at" in why.summary and "resumes at step 'late'" in why.summary
    assert str(why) == why.summary


def test_backing_off_says_until_when_and_why(engine: Engine) -> None:
    iid = insert(engine, Flaky)
    drain(engine)
    why = explain(engine, iid)
    assert why.reason == "backing_off" and why.status == "scheduled"
    assert why.error["type"] == "ConnectionError"
    assert why.run_at is not None
    assert 100 < (why.run_at - why.checked_at).total_seconds() <= 120
    assert "attempt 1 of 10 of step 'perform' failed with ConnectionError: upstream down" in (
        why.summary
    )
    assert re.search(r"the next attempt is due at \S+ \(in (2m|1m 5\ds)\)\.", why.summary)


def test_blocked_names_the_running_holders_of_its_concurrency_key(engine: Engine) -> None:
    first = insert(engine, Quick, concurrency_key="customer:7", concurrency_limit=1)
    second = insert(engine, Quick, concurrency_key="customer:7", concurrency_limit=1)
    [held] = claiming.claim(engine, "default", ["why.Quick"], 10, "node-x", 600)
    assert held.id == first
    why = explain(engine, second)
    assert why.status == "blocked" and why.reason == "blocked"
    assert why.key_holders == (first,) and why.concurrency_key == "customer:7"
    assert f"allows 1 running at once, and instance {first} hold(s) it" in why.summary

    running = explain(engine, first)
    assert running.reason == "running" and running.lease_owner == "node-x"
    assert "is running step 'perform' (attempt 1 of 10) on runner node-x" in running.summary


def test_an_expired_lease_is_reported_as_stuck(engine: Engine) -> None:
    iid = insert(engine, Quick)
    claiming.claim(engine, "default", ["why.Quick"], 1, "node-gone", 0.001)
    why = explain(engine, iid)
    assert why.reason == "lease_expired"
    assert "the lease of runner node-gone expired" in why.summary
    assert "makes it runnable again for the next attempt" in why.summary
    assert "no runner is live" in why.summary  # and so no reaper either


def test_runnable_without_a_live_runner_for_its_queue(engine: Engine) -> None:
    iid = insert(engine, Order)
    why = explain(engine, iid)
    assert why.reason == "no_runner" and why.runners == () and why.class_known is None
    assert "is runnable at step 'start', but no runner is live" in why.summary

    runner_node(engine, "node-1", {"default": 10, "emails": 2}, ["why.Order"])
    why = explain(engine, iid)
    assert why.reason == "no_runner"
    assert "no live runner serves queue 'orders' (the live ones serve 'default', 'emails')" in (
        why.summary
    )


def test_runnable_but_its_class_is_unknown_to_the_runners_of_its_queue(engine: Engine) -> None:
    iid = insert(engine, Order)
    runner_node(engine, "node-1", {"orders": 4}, ["why.Quick"])
    why = explain(engine, iid)
    assert why.reason == "unknown_class" and why.class_known is False
    assert why.runners == ("node-1",)
    assert "none of the runners serving queue 'orders' (node-1) knows class 'why.Order'" in (
        why.summary
    )


def test_runnable_with_a_runner_says_how_many_are_ahead(engine: Engine) -> None:
    ids = [insert(engine, Order) for _ in range(3)]
    runner_node(engine, "node-1", {"orders": 4}, ["why.Order"])
    first, last = explain(engine, ids[0]), explain(engine, ids[-1])
    assert first.reason == last.reason == "runnable"
    assert first.queued_ahead == 0 and last.queued_ahead == 2
    assert "it is next in queue 'orders' (served by node-1)" in first.summary
    assert "2 runnable instance(s) are ahead of it in queue 'orders'" in last.summary
    assert first.class_known is True


def test_a_stale_heartbeat_does_not_count_as_a_live_runner(engine: Engine) -> None:
    iid = insert(engine, Order)
    runner_node(engine, "node-old", {"orders": 4}, ["why.Order"])
    later = explain(engine, iid).checked_at.replace(year=2999)
    why = explain(engine, iid, heartbeat_timeout=30, now=later)
    assert why.reason == "no_runner" and "in the last 30s" in why.summary
    with pytest.raises(ValidationError):
        explain(engine, iid, heartbeat_timeout=0)


def test_scheduled_then_due(engine: Engine) -> None:
    iid = insert(engine, Quick, delay=3600)
    why = explain(engine, iid)
    assert why.reason == "scheduled" and "is scheduled to run step 'perform' at" in why.summary
    assert "(in 1h)" in why.summary or "(in 59m" in why.summary
    assert "No runner is live" in why.summary  # a note: it will matter once due
    advance(engine, 3600)
    due = explain(engine, iid)
    assert due.reason == "no_runner"
    assert "It is due: a runner's scheduler makes it runnable" in due.summary


def test_awaiting_children_lists_the_unfinished_ones(engine: Engine) -> None:
    iid = insert(engine, Parent)
    drain(engine, fsms=[Parent])
    kids = sorted(snapshot_children(engine, iid))
    why = explain(engine, iid)
    assert why.reason == "awaiting_children" and why.pending_children == 2
    assert why.waiting_for_children == tuple(kids)
    assert f"waiting for 2 child instance(s) of its latest Spawn (instance {kids[0]}, " in (
        why.summary
    )
    with pytest.raises(StepLimitExceeded):  # one child runs, the other is left
        drain(engine, fsms=[Quick], max_steps=1)
    assert explain(engine, iid).waiting_for_children == (kids[1],)


def snapshot_children(engine: Engine, iid: int) -> tuple[int, ...]:
    with Session(engine) as s:
        return durable.get(s, iid).children


def test_finished_instances_say_how(engine: Engine) -> None:
    done = insert(engine, Quick)
    late = insert(engine, Order)
    gone = insert(engine, Quick, delay=3600)
    drain(engine)
    advance(engine, 600)
    drain(engine)
    with Session(engine) as s, s.begin():
        durable.cancel(s, gone, "customer asked")
    finished = explain(engine, done).summary
    assert f"is finished: done {_at(engine, done)} (" in finished
    assert finished.endswith("ago), at step 'perform'.") or finished.endswith(
        "(now), at step 'perform'."
    )
    failed = explain(engine, late)
    assert failed.reason == "finished" and failed.finished_at is not None
    assert "failed" in failed.summary and "at step 'late'" in failed.summary
    assert "with Fail: too late." in failed.summary
    cancelled = explain(engine, gone)
    assert "is finished: cancelled at" in cancelled.summary
    assert "(Cancel: customer asked)" in cancelled.summary
    assert "A retry resumes it scheduled, due at " in cancelled.summary  # its delay is not over
    assert explain(engine, done).result == "quick"
    assert "A retry" not in failed.summary and "A retry" not in finished


def test_a_cancelled_waiter_says_a_retry_resumes_its_wait(engine: Engine) -> None:
    gate = insert(engine, Gate)
    drain(engine)
    with Session(engine) as s, s.begin():
        durable.cancel(s, gate)
    assert explain(engine, gate).notes == ("A retry resumes its wait for signal 'open'.",)


def _at(engine: Engine, iid: int) -> str:
    with Session(engine) as s:
        finished = durable.get(s, iid).finished_at
    assert isinstance(finished, datetime)
    return f"at {finished.isoformat(timespec='seconds')}"


def test_unknown_targets_raise_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        durable.explain(session, 987654321)
    with pytest.raises(NotFound):
        durable.explain(session, "no-such-key")
    with pytest.raises(ValidationError):
        durable.explain(session, 1.5)  # type: ignore[arg-type]


# -- the CLI ------------------------------------------------------------------------------------


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GEN_DURABLE_DSN": dsn}
    return subprocess.run(
        [sys.executable, "-m", "gen_durable", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS,
    )


def test_cli_why_prints_the_explanation(engine: Engine, db_url: str) -> None:
    iid = insert(engine, Gate, correlation_key="gate:7")
    drain(engine, fsms=[Gate])
    out = cli("why", "gate:7", dsn=db_url)
    assert out.returncode == 0, out.stderr
    first, *details = out.stdout.splitlines()
    assert first.startswith(f"Instance {iid} (cli.Gate, key 'gate:7') is waiting for signal 'open'")
    assert "          reason: awaiting_signals" in details
    assert "        awaiting: open" in details

    data = json.loads(cli("why", str(iid), "--json", dsn=db_url).stdout)
    assert data["reason"] == "awaiting_signals" and data["awaiting"] == ["open"]
    assert data["instance_id"] == iid and data["status"] == "awaiting"


def test_cli_why_reports_unknown_instances_and_bad_options(db_url: str) -> None:
    missing = cli("why", "424242", dsn=db_url)
    assert missing.returncode == 1 and "NotFound: no instance has id 424242" in missing.stderr
    bad = cli("why", "1", "--heartbeat-timeout", "0", dsn=db_url)
    assert bad.returncode == 2
