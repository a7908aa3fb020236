"""A queue's global concurrency limit: enforced across runners, in the database."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _support.helpers import backend_waiting_on_lock, scalar, snapshot, wait_until
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, Runner, store
from gen_durable.errors import ValidationError

release = threading.Event()


class Held(Job):
    """Runs until the test releases it, so that running rows pile up."""

    name = "qlimit.Held"
    queue = "limited"

    def perform(self, args: Any) -> None:
        release.wait(30)


def _running(engine: Engine) -> int:
    return int(
        scalar(
            engine,
            "SELECT count(*) FROM gen_durable.gd_instances "
            "WHERE queue = 'limited' AND status = 'running'",
        )  # type: ignore[arg-type]
    )


def _runner(url: Any, node: str) -> Runner:
    return Runner(
        create_engine(url, pool_size=12),
        queues={"limited": 4},
        lease=10,
        poll_interval=0.05,
        node_id=node,
        fsms=[Held],
    )


@pytest.fixture(autouse=True)
def _released() -> Any:
    release.clear()
    yield
    release.set()


def test_the_limit_holds_across_runners_and_lifting_it_lets_the_rest_start(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        durable.set_queue_limit(s, "limited", 3)
        ids = durable.insert_all(s, [Held.new() for _ in range(8)])
    runners = [_runner(engine.url, f"node-{n}") for n in range(2)]
    for runner in runners:
        runner.start()
    try:
        wait_until(lambda: _running(engine) == 3)
        # Both runners have free slots (4 each) and poll every 50 ms: give them many
        # chances to overshoot, and look every time.
        for _ in range(40):
            for runner in runners:
                runner._wake_all()
            assert _running(engine) <= 3
            threading.Event().wait(0.02)
        with Session(engine) as s, s.begin():
            durable.set_queue_limit(s, "limited", None)
        wait_until(lambda: _running(engine) == 8)  # 2 runners x 4 slots: the limit is gone
    finally:
        release.set()
        for runner in runners:
            runner.stop(grace=5)
    assert {snapshot(engine, i).status for i in ids} == {"done"}


def test_claims_of_a_limited_queue_wait_for_each_other(engine: Engine) -> None:
    """Forced: while a transaction holds the queue's settings row, a claim waits for it,
    so two claims never count the same running rows."""
    with Session(engine) as s, s.begin():
        durable.set_queue_limit(s, "limited", 2)
        durable.insert_all(s, [Held.new() for _ in range(3)])
    with engine.connect() as holder:
        holder.execute(
            text("SELECT 1 FROM gen_durable.gd_queues WHERE name = 'limited' FOR UPDATE")
        )
        result: dict[str, Any] = {}

        def claim() -> None:
            with engine.begin() as conn:
                rows = store.claims.claim(conn, "limited", [Held.name], 10, "t", 30, None)
            result["ids"] = [r.id for r in rows]

        thread = threading.Thread(target=claim)
        thread.start()
        backend_waiting_on_lock(engine)
        assert "ids" not in result
        holder.rollback()
        thread.join(10)
    assert len(result["ids"]) == 2


def test_an_unlimited_queue_takes_no_lock(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.pause_queue(s, "limited")
        durable.resume_queue(s, "limited")  # a settings row without a limit
        durable.insert_all(s, [Held.new() for _ in range(3)])
    with engine.connect() as holder:
        holder.execute(
            text("SELECT 1 FROM gen_durable.gd_queues WHERE name = 'limited' FOR UPDATE")
        )
        with engine.begin() as conn:  # would block (and time out) if it took the lock
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            rows = store.claims.claim(conn, "limited", [Held.name], 10, "t", 30, None)
        holder.rollback()
    assert len(rows) == 3


@pytest.mark.parametrize("bad", [0, -1, True, "3", 2.5])
def test_a_bad_limit_is_refused_and_writes_nothing(engine: Engine, bad: Any) -> None:
    with Session(engine) as s, s.begin(), pytest.raises(ValidationError):
        durable.set_queue_limit(s, "limited", bad)
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_queues") == 0
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_audit") == 0
