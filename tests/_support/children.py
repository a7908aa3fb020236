"""Classes and helpers shared by the child fan-out tests (test_children*.py).

The join step of every parent writes a row through ``ctx.session`` (:func:`record_join`):
the row commits with the join's transition, so counting rows counts committed joins.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from _support.helpers import scalar
from gen_durable import FSM, Await, Done, Fail, Job, Spawn

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


def create_joins_table(engine: Engine) -> Engine:
    """The table :func:`record_join` writes to (the tests' ``joins`` fixture)."""
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
