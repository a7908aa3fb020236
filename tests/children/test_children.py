"""Child fan-out and join against real PostgreSQL: Spawn, the join, failure policies.

The join step of every parent here writes a row through ``ctx.session``: the row commits
with the join's transition, so counting rows counts committed joins. Trees, cancellation
and bad spawns are in test_children_trees.py; several runner processes in
test_children_processes.py.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest
from _support.children import (
    FAST,
    Hold,
    Policy,
    Square,
    children_rows,
    create_joins_table,
    insert,
    join_count,
    pending,
    record_join,
    send,
    summary,
)
from _support.helpers import (
    backend_waiting_on_lock,
    snapshot,
    transition_for,
    wait_status,
    wait_until,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Runner, Spawn, store


@pytest.fixture
def joins(engine: Engine) -> Engine:
    return create_joins_table(engine)


def statuses(engine: Engine, parent: int) -> list[str]:
    return [k[2] for k in children_rows(engine, parent)]


class MapReduce(FSM):
    """Squares its numbers in children (the last spawned runs first), then sums them."""

    name = "children.MapReduce"
    steps = ("fan_out", "join")

    @attrs.define
    class State:
        numbers: list[int]

    def fan_out(self, ctx: durable.Context) -> Spawn:
        ctx.session.execute(text("SELECT 1"))  # the Spawn commits in the step's session
        count = len(ctx.state.numbers)
        return Spawn(
            [
                Square.new(args={"n": n}, priority=min(9, count - i))
                for i, n in enumerate(ctx.state.numbers)
            ],
            then="join",
        )

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        assert all(c.fsm == "children.Square" for c in ctx.children)
        return Done(
            {
                "ids": [c.id for c in ctx.children],
                "squares": [c.result for c in ctx.children],
                "total": sum(c.result for c in ctx.children),
            }
        )


# --- basic fan-out and join ------------------------------------------------------------------


def test_fan_out_and_join_once_with_children_in_spawn_order(joins: Engine) -> None:
    numbers = [3, 1, 4, 1, 5, 9, 2, 6]
    finished_order: list[int] = []

    def observe(report: durable.StepReport) -> None:
        if report.fsm == "children.Square" and report.committed:
            finished_order.append(report.instance_id)

    iid = insert(joins, MapReduce, state={"numbers": numbers})
    with Runner(joins, queues={"default": 1}, observer=observe, **FAST):
        done = wait_status(joins, iid, "done")
    assert done.result["squares"] == [n * n for n in numbers]
    assert done.result["total"] == sum(n * n for n in numbers)
    kids = children_rows(joins, iid)
    assert done.result["ids"] == [k[0] for k in kids]  # spawn order = id order
    assert finished_order != done.result["ids"]  # they ran in another order
    assert join_count(joins, iid) == 1
    assert done.children == tuple(k[0] for k in kids)
    assert pending(joins, iid) == 0
    child = snapshot(joins, kids[0][0])
    assert child.parent_id == iid and child.children == ()


def test_spawn_commits_its_children_with_the_transition_or_not_at_all(joins: Engine) -> None:
    """A fenced-out Spawn inserts nothing; the landed one inserts all children."""
    import uuid

    import attrs

    iid = insert(joins, MapReduce, state={"numbers": [1, 2, 3]})
    with joins.begin() as conn:
        (row,) = store.claims.claim(conn, "default", ["children.MapReduce"], 1, "t", 30, None)
    good = transition_for(
        row,
        kind="spawn",
        status="awaiting",
        step="join",
        children=tuple(Square.new(args={"n": n}) for n in (1, 2, 3)),
        join_policy="wait",
    )
    stale = attrs.evolve(good, lease_token=uuid.uuid4())
    with joins.begin() as conn:
        assert store.transitions.commit(conn, [stale], None) == {}
    assert children_rows(joins, iid) == []
    with joins.begin() as conn:
        landed = store.transitions.commit(conn, [good], None)
    assert landed[iid].status == "awaiting"
    kids = children_rows(joins, iid)
    assert [k[2] for k in kids] == ["available"] * 3
    parent = snapshot(joins, iid)
    assert parent.status == "awaiting" and parent.awaiting is None and parent.step == "join"
    assert pending(joins, iid) == 3
    with joins.begin() as conn:  # the same claim cannot commit twice
        assert store.transitions.commit(conn, [good], None) == {}
    assert len(children_rows(joins, iid)) == 3


def test_two_completions_racing_on_the_parent_row_wake_it_exactly_once(joins: Engine) -> None:
    """The second completion waits for the first's lock, then counts from its result."""
    import threading

    iid = insert(joins, MapReduce, state={"numbers": [1, 2]})
    with joins.begin() as conn:
        (row,) = store.claims.claim(conn, "default", ["children.MapReduce"], 1, "t", 30, None)
    spawn = transition_for(
        row,
        kind="spawn",
        status="awaiting",
        step="join",
        children=(Square.new(args={"n": 1}), Square.new(args={"n": 2})),
        join_policy="wait",
    )
    with joins.begin() as conn:
        store.transitions.commit(conn, [spawn], None)
    with joins.begin() as conn:
        kids = store.claims.claim(conn, "default", ["children.Square"], 2, "t", 30, None)
    first, second = (transition_for(k, result=1) for k in kids)
    results: dict[str, Any] = {}
    with joins.connect() as holder:
        holder.begin()
        results["first"] = store.transitions.commit(holder, [first], None)

        def commit_second() -> None:
            with joins.begin() as conn:
                results["second"] = store.transitions.commit(conn, [second], None)

        racer = threading.Thread(target=commit_second)
        racer.start()
        backend_waiting_on_lock(joins)  # the second waits for the parent's row lock
        holder.commit()
        racer.join(10)
    assert iid not in results["first"]  # the first left one child to go
    assert results["second"][iid].status == "available"  # the second woke the parent
    parent = snapshot(joins, iid)
    assert parent.status == "available" and pending(joins, iid) == 0


# --- failure policies ------------------------------------------------------------------------


def test_wait_resumes_once_when_every_child_has_finished_failed_ones_included(
    joins: Engine,
) -> None:
    iid = insert(joins, Policy, state={"plan": [False, True, False], "policy": "wait"})
    with Runner(joins, **FAST):
        wait_until(lambda: statuses(joins, iid) == ["awaiting", "failed", "awaiting"])
        send(joins, iid)  # a signal to a joining parent does not wake it
        time.sleep(0.5)
        assert snapshot(joins, iid).status == "awaiting"
        assert pending(joins, iid) == 2
        first, _, last = (k[0] for k in children_rows(joins, iid))
        send(joins, first)
        wait_until(lambda: pending(joins, iid) == 1)
        assert snapshot(joins, iid).status == "awaiting"
        send(joins, last)
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["done", "failed", "done"]
    assert done.result[1]["error"] == {"type": "Fail", "message": "boom"}
    assert done.result[0]["result"] == "ok"
    assert join_count(joins, iid) == 1


def test_fail_fast_resumes_at_the_first_failure_and_never_again(joins: Engine) -> None:
    iid = insert(joins, Policy, state={"plan": [False, True, False], "policy": "fail_fast"})
    with Runner(joins, **FAST):
        done = wait_status(joins, iid, "done")
        seen = [c["status"] for c in done.result]
        assert seen[1] == "failed"  # resumed at the failure, the others still unfinished:
        assert {seen[0], seen[2]} <= {"available", "running", "awaiting"}
        first, _, last = (k[0] for k in children_rows(joins, iid))
        send(joins, first)
        send(joins, last)
        wait_status(joins, first, "done")
        wait_status(joins, last, "done")
        time.sleep(0.3)
    assert join_count(joins, iid) == 1
    assert snapshot(joins, iid).version == done.version


def test_cancel_rest_cancels_unfinished_siblings_then_resumes(joins: Engine) -> None:
    iid = insert(joins, Policy, state={"plan": [False, True, False], "policy": "cancel_rest"})
    with Runner(joins, **FAST):
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["cancelled", "failed", "cancelled"]
    assert "sibling failed" in done.result[0]["error"]["message"]
    assert join_count(joins, iid) == 1


def test_cancel_rest_without_a_failure_waits_for_all(joins: Engine) -> None:
    iid = insert(joins, Policy, state={"plan": [False, False], "policy": "cancel_rest"})
    with Runner(joins, **FAST):
        wait_until(lambda: [k[2] for k in children_rows(joins, iid)] == ["awaiting"] * 2)
        for kid in children_rows(joins, iid):
            send(joins, kid[0])
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["done", "done"]


class Exhausted(Job):
    name = "children.Exhausted"
    queue = "stuck"
    max_attempts = 1

    def perform(self, args: Any) -> None:
        raise AssertionError("never claimed by a runner in these tests")


class Stranded(FSM):
    name = "children.Stranded"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        return Spawn([Exhausted.new(), Square.new(args={"n": 2})], then="join")

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        return Done(summary(ctx))


def test_a_child_the_reaper_fails_does_not_strand_its_parent(joins: Engine) -> None:
    iid = insert(joins, Stranded)
    with Runner(joins, queues={"default": 2}, reaper_interval=0.1, **FAST):
        wait_until(lambda: len(children_rows(joins, iid)) == 2)
        with joins.begin() as conn:  # a worker claims the child, then dies
            claimed = store.claims.claim(conn, "stuck", ["children.Exhausted"], 1, "x", 0.2, None)
        assert len(claimed) == 1
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["failed", "done"]
    assert done.result[0]["error"]["type"] == "LeaseExpired"
    assert join_count(joins, iid) == 1


class Twice(FSM):
    """fail_fast, then a second Spawn while a straggler of the first still waits."""

    name = "children.Twice"
    steps = ("first", "second", "join")

    def first(self, ctx: durable.Context) -> Spawn:
        return Spawn(
            [Hold.new(state={"fail": True}), Hold.new(state={"tag": "straggler"})],
            then="second",
            on_failure="fail_fast",
        )

    def second(self, ctx: durable.Context) -> Spawn:
        record_join(ctx)
        return Spawn([Hold.new(state={"tag": "b1"}), Hold.new(state={"tag": "b2"})], then="join")

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        return Done([c.result for c in ctx.children])


def test_a_straggler_of_an_earlier_spawn_does_not_count_for_the_next(joins: Engine) -> None:
    iid = insert(joins, Twice)
    with Runner(joins, **FAST):
        wait_until(lambda: len(children_rows(joins, iid)) == 4)
        kids = children_rows(joins, iid)
        wait_until(lambda: [k[2] for k in children_rows(joins, iid)][1:] == ["awaiting"] * 3)
        straggler, b1, b2 = (k[0] for k in kids[1:])
        send(joins, straggler)
        wait_status(joins, straggler, "done")
        time.sleep(0.3)
        assert snapshot(joins, iid).status == "awaiting"
        assert pending(joins, iid) == 2
        send(joins, b1)
        send(joins, b2)
        done = wait_status(joins, iid, "done")
    assert done.result == ["b1", "b2"]
    assert join_count(joins, iid) == 2  # "second" once, "join" once


class Duplicate(FSM):
    name = "children.Duplicate"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        return Spawn(
            [Square.new(args={"n": 1}, correlation_key="taken"), Square.new(args={"n": 2})],
            then="join",
        )

    def join(self, ctx: durable.Context) -> Done:
        return Done(summary(ctx))


def test_a_child_whose_key_is_taken_is_born_failed_and_counted(joins: Engine) -> None:
    holder = insert(joins, Hold, correlation_key="taken")
    iid = insert(joins, Duplicate)
    with Runner(joins, fsms=[Duplicate, Square], **FAST):
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["failed", "done"]
    error = done.result[0]["error"]
    assert error["type"] == "DuplicateInstance" and error["existing_id"] == holder
    assert snapshot(joins, holder).status == "available"  # untouched


class Flip(Job):
    """Fails until the test flips it."""

    name = "children.Flip"
    max_attempts = 1
    ok = False

    def perform(self, args: Any) -> str:
        if not type(self).ok:
            raise RuntimeError("not yet")
        return "flipped"


class Reopen(FSM):
    name = "children.Reopen"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        return Spawn([Flip.new(), Hold.new()], then="join")

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        return Done(summary(ctx))


def test_retrying_a_failed_child_makes_the_joining_parent_wait_for_it_again(
    joins: Engine,
) -> None:
    Flip.ok = False
    iid = insert(joins, Reopen)
    with Runner(joins, **FAST):
        wait_until(lambda: [k[2] for k in children_rows(joins, iid)] == ["failed", "awaiting"])
        assert pending(joins, iid) == 1
        flip, hold = (k[0] for k in children_rows(joins, iid))
        Flip.ok = True
        with Session(joins) as s, s.begin():
            durable.retry(s, flip)
        wait_status(joins, flip, "done")
        assert pending(joins, iid) == 1
        assert snapshot(joins, iid).status == "awaiting"
        send(joins, hold)
        done = wait_status(joins, iid, "done")
    assert [c["status"] for c in done.result] == ["done", "done"]
    assert join_count(joins, iid) == 1
