"""Claim-ahead: while steps are fast a claim takes rows beyond the free slots; they wait
in a local line, never beyond the queue's concurrency, never long, and never past a stop.

Each test first drains fast jobs so the dispatcher's average step time is short (claims
then take rows ahead), then runs steps that block on a gate the test holds: the rows
claimed ahead are then stuck behind slow steps, which is what the line must not allow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _support.helpers import count, wait_until
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, Runner, events
from gen_durable.runtime import dispatcher

pytestmark = pytest.mark.db

QUEUE = "ahead"
FAST = {"lease": 5.0, "poll_interval": 0.2}


class Quick(Job):
    name = "ahead.Quick"
    queue = QUEUE

    def perform(self, args: Any) -> None:
        return None


class Gate:
    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.running -= 1


GATE = Gate()


class Gated(Job):
    name = "ahead.Gated"
    queue = QUEUE

    def perform(self, args: Any) -> None:
        with GATE:
            assert GATE.open.wait(30), "the test never opened the gate"


@pytest.fixture
def gate() -> Iterator[Gate]:
    global GATE
    GATE = Gate()
    yield GATE
    GATE.open.set()


def _claims() -> tuple[list[int], Any]:
    sizes: list[int] = []
    detach = events.attach(lambda e: sizes.append(e["count"]), ["claim"])
    return sizes, detach


def _insert(engine: Engine, cls: type[Job], n: int) -> None:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [cls.new() for _ in range(n)])


def _warm(engine: Engine) -> None:
    """Fast steps first: the dispatcher claims ahead once its steps are fast."""
    _insert(engine, Quick, 200)
    wait_until(lambda: count(engine, _UNFINISHED) == 0)


def _running(engine: Engine) -> int:
    return count(engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'running'")


_UNFINISHED = "SELECT count(*) FROM gen_durable.gd_instances WHERE finished_at IS NULL"


def _claims_of_fast_steps(engine: Engine) -> list[int]:
    """The sizes of the claims a Runner at concurrency 2 makes to drain fast steps."""
    sizes, detach = _claims()
    try:
        with Runner(engine, queues={QUEUE: 2}, **FAST):
            _warm(engine)
    finally:
        detach()
    return sizes


def test_a_claim_takes_rows_ahead_when_steps_are_fast(engine: Engine) -> None:
    sizes = _claims_of_fast_steps(engine)
    # Two free slots at most, yet claims took more: the line's rows.
    assert max(sizes) > 2, sizes


def test_at_a_low_concurrency_the_line_holds_more_than_its_multiple(engine: Engine) -> None:
    """At concurrency 2 the line may hold more than AHEAD_LINE x 2 rows while steps drain
    them fast: claims stay large when a queue's concurrency is split over processes."""
    sizes = _claims_of_fast_steps(engine)
    # Two free slots plus a line of AHEAD_LINE x 2 at most before the line's floor.
    assert max(sizes) > 2 + dispatcher.AHEAD_LINE * 2, sizes


def test_rows_stuck_behind_slow_steps_are_given_back(engine: Engine, gate: Gate) -> None:
    """The line is given back once its oldest row waited AHEAD_HOLD_SECONDS: another
    runner may start those rows while this one's steps are slow."""
    sizes, detach = _claims()
    try:
        with Runner(engine, queues={QUEUE: 2}, **FAST):
            _warm(engine)
            sizes.clear()
            _insert(engine, Gated, 6)
            wait_until(lambda: gate.running == 2)
            # Only the two blocked steps hold their rows; the rest are runnable again.
            wait_until(lambda: _running(engine) == 2)
            assert count(engine, _UNFINISHED) == 6
            assert gate.running == 2
            gate.open.set()
            wait_until(lambda: count(engine, _UNFINISHED) == 0)
    finally:
        detach()
    assert gate.most == 2, "more steps ran at once than the queue's concurrency"
    assert sizes and sizes[0] > 2, f"no claim took rows ahead of the slow steps: {sizes}"


def test_rows_claimed_ahead_are_given_back_at_stop(
    engine: Engine, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At stop the line goes back at once, not after the grace period the running steps
    get."""
    monkeypatch.setattr(dispatcher, "AHEAD_HOLD_SECONDS", 600.0)
    runner = Runner(engine, queues={QUEUE: 2}, grace=30.0, **FAST).start()
    stopping = threading.Thread(target=runner.stop)
    started = False
    try:
        _warm(engine)
        _insert(engine, Gated, 6)
        wait_until(lambda: gate.running == 2)
        wait_until(lambda: _running(engine) > 2)  # the line holds rows too
        stopping.start()
        started = True
        wait_until(lambda: _running(engine) == 2)  # while the two steps still block
        assert gate.running == 2
    finally:
        gate.open.set()
        if started:
            stopping.join(60)
        else:
            runner.stop()
    assert count(engine, _UNFINISHED) == 4
    statuses = count(
        engine,
        "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'available' AND attempt = 0",
    )
    assert statuses == 4, "the rows given back must keep no attempt"
