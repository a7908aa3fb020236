"""Forced interleavings: each test holds one side's row lock and waits on pg_stat_activity."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _support.helpers import backend_waiting_on_lock, scalar, snapshot, transition_for
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, store
from gen_durable.domain.decide import Transition


class Parked(FSM):
    name = "race.Parked"
    steps = ("start", "resume")

    def start(self, ctx: durable.Context) -> Await:
        return Await("go", then="resume")

    def resume(self, ctx: durable.Context) -> Done:
        return Done()


def _claim_one(engine: Engine) -> Any:
    with engine.begin() as conn:
        rows = store.claims.claim(conn, "default", ["race.Parked"], 1, "test-node", 30, None)
    assert len(rows) == 1
    return rows[0]


def _await_transition(row: Any) -> Transition:
    return transition_for(
        row, kind="await", status="awaiting", step="resume", state="{}", await_names=("go",)
    )


def _insert(engine: Engine) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, Parked)


def test_signal_committed_while_the_await_commit_waits_on_its_lock_is_seen(
    engine: Engine,
) -> None:
    """The sender holds the row lock; the parking commit waits, then must see the signal."""
    iid = _insert(engine)
    row = _claim_one(engine)
    with Session(engine) as sender:
        sender.begin()
        durable.signal(sender, iid, "go", {"n": 1})  # row locked, instance still running
        outcome: dict[str, Any] = {}

        def park() -> None:
            with engine.begin() as conn:
                outcome["landed"] = store.transitions.commit(conn, [_await_transition(row)], None)

        parker = threading.Thread(target=park)
        parker.start()
        backend_waiting_on_lock(engine)
        sender.commit()
        parker.join(10)
    assert iid in outcome["landed"]
    assert outcome["landed"][iid].status == "available"  # woken in the parking commit
    snap = snapshot(engine, iid)
    assert snap.status == "available" and snap.step == "resume"


def test_await_committed_while_the_signal_waits_on_its_lock_is_woken(engine: Engine) -> None:
    """The parking commit holds the row lock; the sender waits, then must wake it."""
    iid = _insert(engine)
    row = _claim_one(engine)
    with engine.connect() as parker:
        tx = parker.begin()
        landed = store.transitions.commit(parker, [_await_transition(row)], None)
        assert landed[iid].status == "awaiting"
        result: dict[str, Any] = {}

        def send() -> None:
            with Session(engine) as s, s.begin():
                result["sent"] = durable.signal(s, iid, "go", {"n": 2})

        sender = threading.Thread(target=send)
        sender.start()
        backend_waiting_on_lock(engine)
        tx.commit()
        sender.join(10)
    assert result["sent"].instance_id == iid
    snap = snapshot(engine, iid)
    assert snap.status == "available" and snap.step == "resume"


def test_a_late_commit_with_a_stale_token_is_fenced_out(engine: Engine) -> None:
    iid = _insert(engine)
    row = _claim_one(engine)
    with engine.begin() as conn:  # the lease expires and the reaper hands the row back
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET lease_expires_at = now() - interval '1s' "
                "WHERE id = :id"
            ),
            {"id": iid},
        )
        assert [r.id for r in store.maintenance.reap(conn, 10, None)] == [iid]
    again = _claim_one(engine)
    assert again.lease_token != row.lease_token
    with engine.begin() as conn:
        assert store.transitions.commit(conn, [_await_transition(row)], None) == {}
    with engine.begin() as conn:
        assert iid in store.transitions.commit(conn, [_await_transition(again)], None)


def test_a_commit_after_the_lease_expired_is_fenced_out_even_before_the_reaper(
    engine: Engine,
) -> None:
    iid = _insert(engine)
    row = _claim_one(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET lease_expires_at = now() - interval '1s' "
                "WHERE id = :id"
            ),
            {"id": iid},
        )
    with engine.begin() as conn:
        assert store.transitions.commit(conn, [_await_transition(row)], None) == {}
    assert snapshot(engine, iid).status == "running"


def test_concurrent_inserts_with_one_correlation_key_make_one_instance(engine: Engine) -> None:
    """The first insert holds its uncommitted row; the second waits on the unique index."""
    key = f"order:{uuid.uuid4().hex[:8]}"
    with Session(engine) as first:
        first.begin()
        first_id = durable.insert(first, Parked, correlation_key=key)
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(lambda: _insert_key(engine, key)) for _ in range(4)]
            backend_waiting_on_lock(engine)
            first.commit()
            ids = {f.result(10) for f in futures}
    assert ids == {first_id}
    assert (
        scalar(
            engine,
            "SELECT count(*) FROM gen_durable.gd_instances WHERE correlation_key = :k",
            k=key,
        )
        == 1
    )


def _insert_key(engine: Engine, key: str) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, Parked, correlation_key=key)


def test_a_row_locked_from_outside_does_not_stall_a_grouped_commit(engine: Engine) -> None:
    """One of two rows is locked by a long outside transaction: the other commits anyway."""
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Parked.new(), Parked.new()])
    with engine.begin() as conn:
        rows = store.claims.claim(conn, "default", ["race.Parked"], 2, "n", 30, None)
    assert sorted(r.id for r in rows) == sorted(ids)
    committed: list[Any] = []
    from gen_durable.runtime.committer import Committer

    committer = Committer(engine, committed.extend, lock_timeout_ms=100)
    committer.start()
    blocked, free = rows
    with engine.connect() as outsider:
        tx = outsider.begin()
        outsider.execute(
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :id FOR UPDATE"),
            {"id": blocked.id},
        )
        f_blocked = committer.submit(_await_transition(blocked))
        f_free = committer.submit(_await_transition(free))
        assert f_free.result(10) is True  # landed while the other row is still locked
        assert not f_blocked.done()
        tx.commit()
    assert f_blocked.result(10) is True
    committer.stop(5)
    assert {c.instance_id for c in committed} == set(ids)
