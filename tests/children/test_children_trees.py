"""Child fan-out against real PostgreSQL: nested trees, cancellation, GC, bad spawns.

Spawn and the join are in test_children.py; several runner processes in
test_children_processes.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from _support.children import (
    FAST,
    Hold,
    Policy,
    Square,
    cancel,
    children_rows,
    create_joins_table,
    insert,
    pending,
    record_join,
    send,
)
from _support.helpers import scalar, snapshot, wait_status, wait_until
from sqlalchemy import Engine, text

import gen_durable as durable
from gen_durable import FSM, Await, Done, InsertSpec, Runner, Spawn, store
from gen_durable.errors import ConfigurationError, UnknownClass, ValidationError


@pytest.fixture
def joins(engine: Engine) -> Engine:
    return create_joins_table(engine)


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
