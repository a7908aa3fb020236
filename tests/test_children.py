"""Child fan-out and join against real PostgreSQL: Spawn, the join, failure policies, trees.

The join step of every parent here writes a row through ``ctx.session``: the row commits
with the join's transition, so counting rows counts committed joins.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from procs.fanout_worker import setup as setup_fanout
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from support import (
    RunnerProcesses,
    backend_waiting_on_lock,
    scalar,
    snapshot,
    wait_status,
    wait_until,
)

import gen_durable as durable
from gen_durable import FSM, Await, Done, Fail, InsertSpec, Job, Runner, Spawn, store
from gen_durable.errors import ConfigurationError, UnknownClass, ValidationError

FAST = {"lease": 2.0, "poll_interval": 0.2, "grace": 1.0}


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


def send(engine: Engine, target: int | str, name: str = "go") -> None:
    with Session(engine) as s, s.begin():
        durable.signal(s, target, name)


def cancel(engine: Engine, target: int | str, reason: str = "stop") -> bool:
    with Session(engine) as s, s.begin():
        return durable.cancel(s, target, reason)


@pytest.fixture
def joins(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE gd_test_joins (instance_id bigint, step text)"))
    return engine


def join_count(engine: Engine, iid: int) -> int:
    return int(
        scalar(engine, "SELECT count(*) FROM gd_test_joins WHERE instance_id = :i", i=iid)  # type: ignore[arg-type]
    )


def record_join(ctx: durable.Context) -> None:
    ctx.session.execute(
        text("INSERT INTO gd_test_joins VALUES (:i, :s)"), {"i": ctx.instance_id, "s": ctx.step}
    )


def children_rows(engine: Engine, parent: int) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, fsm, status FROM gen_durable.gd_instances "
                "WHERE parent_id = :p ORDER BY id"
            ),
            {"p": parent},
        )
        return [tuple(r) for r in rows]


def statuses(engine: Engine, parent: int) -> list[str]:
    return [k[2] for k in children_rows(engine, parent)]


def pending(engine: Engine, iid: int) -> int:
    return int(
        scalar(  # type: ignore[arg-type]
            engine, "SELECT pending_children FROM gen_durable.gd_instances WHERE id = :i", i=iid
        )
    )


def summary(ctx: durable.Context) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "fsm": c.fsm, "status": c.status.value, "result": c.result, "error": c.error}
        for c in ctx.children
    ]


# --- classes --------------------------------------------------------------------------------


class Square(Job):
    name = "children.Square"

    def perform(self, args: dict[str, int]) -> int:
        return args["n"] * args["n"]


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


class Hold(FSM):
    """A child that fails at once when told to, else waits for "go" and finishes."""

    name = "children.Hold"
    steps = ("start", "finish")

    def start(self, ctx: durable.Context) -> Fail | Await:
        if ctx.state.get("fail"):
            return Fail("boom")
        return Await("go", then="finish")

    def finish(self, ctx: durable.Context) -> Done:
        return Done(ctx.state.get("tag", "ok"))


class Policy(FSM):
    """Spawns Hold children (``plan``: which fail) under one ``on_failure`` policy."""

    name = "children.Policy"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        return Spawn(
            [Hold.new(state={"fail": f}) for f in ctx.state["plan"]],
            then="join",
            on_failure=ctx.state["policy"],
        )

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        return Done(summary(ctx))


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
    from gen_durable.decide import Decision
    from gen_durable.store.transitions import Transition

    iid = insert(joins, MapReduce, state={"numbers": [1, 2, 3]})
    with joins.begin() as conn:
        (row,) = store.leases.claim(conn, "default", ["children.MapReduce"], 1, "t", 30, None)
    decision = Decision(
        kind="spawn",
        status="awaiting",
        step="join",
        state={"numbers": [1, 2, 3]},
        children=tuple(Square.new(args={"n": n}) for n in (1, 2, 3)),
        join_policy="wait",
    )
    stale = Transition(iid, __import__("uuid").uuid4(), row.version, decision)
    with joins.begin() as conn:
        assert store.transitions.commit(conn, [stale], None) == {}
    assert children_rows(joins, iid) == []
    good = Transition(iid, row.lease_token, row.version, decision)
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

    from gen_durable.decide import Decision
    from gen_durable.store.transitions import Transition

    iid = insert(joins, MapReduce, state={"numbers": [1, 2]})
    with joins.begin() as conn:
        (row,) = store.leases.claim(conn, "default", ["children.MapReduce"], 1, "t", 30, None)
    spawn = Decision(
        kind="spawn",
        status="awaiting",
        step="join",
        state={"numbers": [1, 2]},
        children=(Square.new(args={"n": 1}), Square.new(args={"n": 2})),
        join_policy="wait",
    )
    with joins.begin() as conn:
        store.transitions.commit(conn, [Transition(iid, row.lease_token, row.version, spawn)], None)
    with joins.begin() as conn:
        kids = store.leases.claim(conn, "default", ["children.Square"], 2, "t", 30, None)
    done = Decision(kind="done", status="done", step="perform", state=None, result=1)
    first, second = (Transition(k.id, k.lease_token, k.version, done) for k in kids)
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
            claimed = store.leases.claim(conn, "stuck", ["children.Exhausted"], 1, "x", 0.2, None)
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


# --- trees -------------------------------------------------------------------------------------


class Tree(FSM):
    """A node with ``width`` children down to ``depth`` 0; leaves wait for "go" if told."""

    name = "children.Tree"
    steps = ("grow", "join", "leaf_done")

    def grow(self, ctx: durable.Context) -> Spawn | Done | Await:
        depth, width = ctx.state["depth"], ctx.state["width"]
        if depth == 0:
            return Await("go", then="leaf_done") if ctx.state.get("hold") else Done(1)
        state = {**ctx.state, "depth": depth - 1}
        return Spawn([Tree.new(state=state) for _ in range(width)], then="join")

    def join(self, ctx: durable.Context) -> Done:
        record_join(ctx)
        return Done(sum(c.result for c in ctx.children if c.status == "done"))

    def leaf_done(self, ctx: durable.Context) -> Done:
        return Done(1)


def all_instances(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, parent_id, status FROM gen_durable.gd_instances ORDER BY id")
        )
        return [tuple(r) for r in rows]


def test_nested_fan_out_joins_every_level_once(joins: Engine) -> None:
    iid = insert(joins, Tree, state={"depth": 2, "width": 3})
    with Runner(joins, queues={"default": 4}, **FAST):
        done = wait_status(joins, iid, "done")
    assert done.result == 9
    rows = all_instances(joins)
    assert len(rows) == 1 + 3 + 9 and all(r[2] == "done" for r in rows)
    assert int(scalar(joins, "SELECT count(*) FROM gd_test_joins")) == 4  # type: ignore[arg-type]
    assert int(scalar(joins, "SELECT count(DISTINCT instance_id) FROM gd_test_joins")) == 4  # type: ignore[arg-type]


def test_cancelling_a_parent_cancels_its_unfinished_descendants(joins: Engine) -> None:
    iid = insert(joins, Tree, state={"depth": 2, "width": 2, "hold": True})
    bystander = insert(joins, Hold)
    with Runner(joins, queues={"default": 4}, **FAST):
        wait_until(lambda: sum(r[2] == "awaiting" for r in all_instances(joins)) == 8)
        assert cancel(joins, iid, "customer left")
        rows = {r[0]: r for r in all_instances(joins)}
    tree = [r for r in rows.values() if r[0] != bystander]
    assert len(tree) == 7 and all(r[2] == "cancelled" for r in tree)
    assert rows[bystander][2] == "awaiting"
    leaf = snapshot(joins, tree[-1][0])
    assert leaf.error["message"] == f"ancestor {iid} was cancelled: customer left"
    assert snapshot(joins, iid).error == {"type": "Cancel", "message": "customer left"}
    assert not cancel(joins, iid)  # already finished


def test_cancelling_a_child_counts_as_finished_for_its_parent(joins: Engine) -> None:
    iid = insert(joins, Tree, state={"depth": 2, "width": 2, "hold": True})
    with Runner(joins, queues={"default": 4}, **FAST):
        wait_until(lambda: sum(r[2] == "awaiting" for r in all_instances(joins)) == 7)
        middle = [r[0] for r in all_instances(joins) if r[1] == iid]
        assert cancel(joins, middle[0])
        assert pending(joins, iid) == 1
        assert snapshot(joins, iid).status == "awaiting"
        leaves = [r[0] for r in all_instances(joins) if r[1] == middle[1]]
        for leaf in leaves:
            send(joins, leaf)
        done = wait_status(joins, iid, "done")
    assert done.result == 2  # the other middle's two leaves; the cancelled one adds nothing
    assert [r[2] for r in all_instances(joins) if r[1] == middle[0]] == ["cancelled"] * 2


def test_gc_never_removes_a_child_of_an_unfinished_parent(joins: Engine) -> None:
    iid = insert(joins, Policy, state={"plan": [True, False], "policy": "wait"})
    with Runner(joins, **FAST):
        wait_until(lambda: [k[2] for k in children_rows(joins, iid)] == ["failed", "awaiting"])
    failed, waiting = (k[0] for k in children_rows(joins, iid))
    old = (
        "UPDATE gen_durable.gd_instances SET finished_at = now() - interval '2 days' WHERE id = :i"
    )
    with joins.begin() as conn:
        conn.execute(text(old), {"i": failed})
        assert store.maintenance.collect_garbage(conn, 86400, 100, None) == 0
    assert cancel(joins, iid)
    with joins.begin() as conn:
        for victim in (failed, waiting, iid):
            conn.execute(text(old), {"i": victim})
        assert store.maintenance.collect_garbage(conn, 86400, 100, None) == 3
    assert all_instances(joins) == []


# --- bad input -----------------------------------------------------------------------------


def test_bad_spawns_are_typed_errors() -> None:
    with pytest.raises(ValidationError, match="at least one child"):
        Spawn([], then="join")
    with pytest.raises(ValidationError, match="specs"):
        Spawn([Square], then="join")  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="twice"):
        Spawn([Square.new(correlation_key="k"), Square.new(correlation_key="k")], then="join")
    with pytest.raises(ValidationError, match="on_failure"):
        Spawn([Square.new()], then="join", on_failure="sometimes")  # type: ignore[arg-type]
    with pytest.raises(UnknownClass):
        InsertSpec.build("no.such.Class")


class Bad(FSM):
    name = "children.Bad"
    steps = ("spawn", "join")
    max_attempts = 1

    def spawn(self, ctx: durable.Context) -> Spawn:
        kind = ctx.state["kind"]
        if kind == "empty":
            return Spawn([], then="join")
        if kind == "unknown":
            return Spawn([InsertSpec.build("no.such.Class")], then="join")
        return Spawn([Square.new(args={"n": n}) for n in range(ctx.state["n"])], then="join")

    def join(self, ctx: durable.Context) -> Done:
        return Done()


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ({"kind": "empty"}, "ValidationError"),
        ({"kind": "unknown"}, "UnknownClass"),
        ({"kind": "many", "n": 4}, "InvalidOutcome"),
    ],
)
def test_a_bad_spawn_fails_the_step_visibly_and_writes_nothing(
    engine: Engine, state: dict[str, Any], error: str
) -> None:
    iid = insert(engine, Bad, state=state)
    with Runner(engine, max_children=3, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert failed.error["type"] == error
    assert failed.step == "spawn" and failed.children == ()
    assert all_instances(engine) == [(iid, None, "failed")]


def test_max_children_is_validated(engine: Engine) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError, match="max_children"):
            Runner(engine, max_children=bad)  # type: ignore[arg-type]


# --- several runner processes ----------------------------------------------------------------


class Workers(RunnerProcesses):
    """Fan-out runner processes (procs.fanout_worker) on one database."""

    def __init__(self, url: str) -> None:
        super().__init__("procs.fanout_worker", url)

    def start(self, concurrency: int = 8, lease: float = 1.5) -> subprocess.Popen[bytes]:  # type: ignore[override]
        return super().start("--lease", str(lease), "--concurrency", str(concurrency))


@pytest.fixture
def workers(db_url: str, engine: Engine) -> Iterator[Workers]:
    setup_fanout(engine)
    w = Workers(db_url)
    yield w
    w.stop_all()


def fan_runs(engine: Engine, step: str) -> int:
    return int(scalar(engine, "SELECT count(*) FROM gd_test_runs WHERE step = :s", s=step))  # type: ignore[arg-type]


def assert_joined_once(engine: Engine, iid: int, n: int) -> None:
    done = wait_status(engine, iid, "done", timeout=60)
    assert done.result == {"children": n, "sum": sum(range(n))}
    joined = scalar(engine, "SELECT count(*) FROM gd_test_joins WHERE instance_id = :i", i=iid)
    assert joined == 1
    assert fan_runs(engine, "join") == 1
    assert pending(engine, iid) == 0
    kids = children_rows(engine, iid)
    assert len(kids) == n and all(k[2] == "done" for k in kids)
    effects = scalar(  # each child's step committed exactly once
        engine, "SELECT count(*) FROM gd_test_effects WHERE step = 'perform'"
    )
    assert effects == n


def test_many_children_finishing_at_once_on_several_processes_join_once(
    engine: Engine, workers: Workers
) -> None:
    from procs.fanout_worker import Fan

    for _ in range(3):
        workers.start(concurrency=8)
    n = 240
    iid = insert(engine, Fan, state={"n": n, "at": time.time() + 3})
    assert_joined_once(engine, iid, n)
    pids = scalar(engine, "SELECT count(DISTINCT pid) FROM gd_test_runs WHERE step = 'perform'")
    assert pids == 3


def test_sigkill_during_the_spawn_commit_leaves_no_children_and_the_rerun_spawns_once(
    engine: Engine, workers: Workers
) -> None:
    from procs.fanout_worker import Fan

    n = 20
    iid = insert(engine, Fan, state={"n": n, "linger": 1.0})
    with engine.connect() as blocker:
        blocker.begin()
        first = workers.start(concurrency=2)
        wait_until(lambda: fan_runs(engine, "spawn") == 1)
        blocker.execute(  # the Spawn's commit now waits for this row lock
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": iid}
        )
        backend_waiting_on_lock(engine)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        blocker.rollback()
    assert children_rows(engine, iid) == []
    workers.start(concurrency=4)
    assert_joined_once(engine, iid, n)
    assert fan_runs(engine, "spawn") == 2  # the killed Spawn ran again, and spawned once


def test_sigkill_during_child_completions_joins_once(engine: Engine, workers: Workers) -> None:
    from procs.fanout_worker import Fan

    n = 30
    iid = insert(engine, Fan, state={"n": n, "sleep": 0.4})
    first = workers.start(concurrency=6)
    wait_until(lambda: len(children_rows(engine, iid)) == n)
    wait_until(lambda: sum(k[2] == "done" for k in children_rows(engine, iid)) >= 6)
    with engine.connect() as blocker:
        blocker.begin()
        blocker.execute(  # finishing children now wait for their parent's row lock
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": iid}
        )
        backend_waiting_on_lock(engine, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        blocker.rollback()
    before = sum(k[2] == "done" for k in children_rows(engine, iid))
    assert before < n
    assert pending(engine, iid) == n - before  # nothing counted that did not commit
    workers.start(concurrency=6)
    assert_joined_once(engine, iid, n)
    assert fan_runs(engine, "perform") > n  # the killed ones ran again
