"""A bulk retry acts on a whole batch in a few statements; it must leave every instance as
the single ``retry()`` of each would. One database is retried batch-wise, an identical one
row by row, over a batch that mixes instances in different situations: failed jobs,
instances cancelled while parked on an await of any or all of two names (signalled
meanwhile or not, partly), while backing off with its pack, or asleep,
failed children of one parent still joining a third, and one whose correlation key another
instance has taken (the batch then goes one by one, leaving that one alone)."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Job, Sleep, Spawn
from gen_durable.client import bulk
from gen_durable.errors import DuplicateInstance
from gen_durable.testing import drain


class Flaky(Job):
    name = "bulkbatch.Flaky"
    max_attempts = 1

    def perform(self, args: Any) -> None:
        raise RuntimeError("down")


class Hold(Job):
    name = "bulkbatch.Hold"

    def perform(self, args: Any) -> None:
        return None


class Parked(FSM):
    name = "bulkbatch.Parked"
    steps = ("wait", "go")
    backoff = Backoff(base=3600, factor=1.0, max=3600, jitter=0.0)

    def wait(self, ctx: durable.Context) -> Any:
        if ctx.state.get("sleep"):
            return Sleep(3600, then="go")
        return Await("a", "b", then="go", all=bool(ctx.state.get("all")))

    def go(self, ctx: durable.Context) -> Done:
        if ctx.state.get("raise"):  # backs off for an hour, holding its pack
            raise RuntimeError("not yet")
        return Done([s.payload for s in ctx.awaited])


class Parent(FSM):
    name = "bulkbatch.Parent"
    steps = ("fan", "join")

    def fan(self, ctx: durable.Context) -> Spawn:
        kids = [Flaky.new(args={}), Flaky.new(args={}), Hold.new(args={}, queue="held")]
        return Spawn(kids, then="join")

    def join(self, ctx: durable.Context) -> Done:
        return Done([c.status for c in ctx.children])


def _scenario(engine: Engine, *, key_taken: bool) -> dict[str, int]:
    with Session(engine) as s, s.begin():
        for n in range(3):
            durable.insert(s, Flaky, args={}, correlation_key=f"job:{n}")
        waiting = [durable.insert(s, Parked, state={}) for _ in range(2)]
        both = durable.insert(s, Parked, state={"all": True})  # all of a, b: only a comes
        backing_off = durable.insert(s, Parked, state={"raise": True})
        asleep = durable.insert(s, Parked, state={"sleep": True})
        durable.insert(s, Parent, state={})
    drain(engine, queues=["default"])  # the held child stays available: its parent joins
    with Session(engine) as s, s.begin():
        durable.signal(s, backing_off, "b", "b0")
    drain(engine, queues=["default"])  # go fails with its pack [b0], backs off an hour
    with Session(engine) as s, s.begin():
        durable.signal(s, waiting[0], "a", "a0")  # wakes it: cancelled before it runs
        durable.signal(s, both, "a", "a1")
        durable.signal(s, backing_off, "a", "newer than its pack")
        for iid in [*waiting, both, backing_off, asleep]:
            durable.cancel(s, iid)
        durable.signal(s, waiting[1], "a", "sent while cancelled")
        if key_taken:
            durable.insert(s, Hold, args={}, correlation_key="job:1")
    return {"both": both, "backing_off": backing_off}


def _view(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, status, step, attempt, finished_at IS NULL, run_at > now(), "
                "await_names, await_pack, pending_children FROM gen_durable.gd_instances "
                "ORDER BY id"
            )
        )
        audit = conn.execute(
            text("SELECT target, instance_id FROM gen_durable.gd_audit WHERE action = 'retry'")
        )
        return [tuple(r) for r in rows] + sorted(tuple(r) for r in audit)


def _bulk_retry(engine: Engine) -> list[int]:
    where = bulk.BulkFilter()
    with Session(engine) as s, s.begin():
        preview = bulk.bulk_preview(s, "retry", where)
        audit_id = bulk.bulk_start(
            s, "retry", where, bound=preview.bound, expected=preview.count, actor="ops"
        )
    with Session(engine) as s, s.begin():
        return bulk.bulk_step(s, audit_id, batch=100).ids


def _single_retries(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        ids = conn.execute(
            text(
                "SELECT id FROM gen_durable.gd_instances "
                "WHERE status IN ('failed', 'cancelled') ORDER BY id"
            )
        ).scalars()
        eligible = list(ids)
    done = []
    for iid in eligible:
        with Session(engine) as s, s.begin(), contextlib.suppress(DuplicateInstance):
            done.append(durable.retry(s, iid, actor="ops"))
    return done


@pytest.mark.parametrize("key_taken", [False, True], ids=["batch", "a-key-taken"])
def test_a_bulk_retry_leaves_each_instance_as_its_single_retry_would(
    two_engines: tuple[Engine, Engine], key_taken: bool
) -> None:
    batched, single = two_engines
    ids = _scenario(batched, key_taken=key_taken)
    assert _scenario(single, key_taken=key_taken) == ids
    retried = _bulk_retry(batched)
    assert retried == _single_retries(single)
    assert len(retried) == (9 if key_taken else 10)
    assert _view(batched) == _view(single)
    rows = {row[0]: row for row in _view(batched)[: -len(retried)]}
    assert {row[1] for row in rows.values()} >= {"awaiting", "available", "scheduled"}
    assert rows[ids["both"]][1] == "awaiting"  # all of a, b: only a is there
    backing_off = rows[ids["backing_off"]]
    assert (backing_off[1], len(backing_off[7])) == ("scheduled", 1)  # its pack [b0] kept
    for engine in two_engines:  # and they go on alike: the woken runs with its pack
        drain(engine, queues=["default"])
    assert _view(batched) == _view(single)
