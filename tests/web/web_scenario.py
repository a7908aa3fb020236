"""Classes and a small population of instances for the dashboard's tests: one awaiting a
payment (its state holds an integer past 2^53), one failed with a traceback, one done,
a batch whose children wait, and enough plain orders for a second page."""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Spawn
from gen_durable.testing import drain

BIG = 2**60 + 1
"""An integer a JavaScript double cannot hold: the page must show it exactly."""


class Order(FSM):
    """start -> (await payment) -> ship -> done; ``fail`` makes ship raise."""

    name = "web.Order"
    queue = "orders"
    steps = ("start", "ship")
    history = "all"
    max_attempts = 1

    def start(self, ctx: durable.Context) -> Await:
        return Await("payment", then="ship")

    def ship(self, ctx: durable.Context) -> Done:
        if ctx.state.get("fail"):
            raise ConnectionError("carrier unreachable")
        return Done({"shipped": ctx.state.get("order")})


class Batch(FSM):
    """fan: spawn two orders, then join."""

    name = "web.Batch"
    queue = "batches"
    steps = ("fan", "join")
    history = "all"

    def fan(self, ctx: durable.Context) -> Spawn:
        kids = [Order.new(state={"order": n}) for n in (1, 2)]
        return Spawn(kids, then="join")

    def join(self, ctx: durable.Context) -> Done:
        return Done()


@attrs.frozen
class Population:
    """The ids of the instances a test looks at."""

    awaiting: int
    failed: int
    done: int
    batch: int
    children: tuple[int, ...]
    plain: tuple[int, ...]


def populate(engine: Engine, plain: int = 60) -> Population:
    """Insert and run the instances (all committed, history recorded)."""
    with Session(engine) as s, s.begin():
        awaiting = durable.insert(s, Order, state={"order": BIG}, correlation_key="order-big")
        failed = durable.insert(s, Order, state={"order": 2, "fail": True})
        done = durable.insert(s, Order, state={"order": 3})
        batch = durable.insert(s, Batch, state={})
    drain(engine)
    with Session(engine) as s, s.begin():
        durable.signal(s, failed, "payment", {"amount": 10})
        durable.signal(s, done, "payment", {"amount": 12})
    drain(engine)
    with Session(engine) as s, s.begin():
        kids = durable.get(s, batch).children
        specs = [Order.new(state={"order": 1000 + n}, queue="bulk") for n in range(plain)]
        many = durable.insert_all(s, specs)
    return Population(
        awaiting=awaiting,
        failed=failed,
        done=done,
        batch=batch,
        children=tuple(kids),
        plain=tuple(many),
    )


def status_of(engine: Engine, instance_id: int) -> Any:
    """The status of an instance, as its value."""
    with Session(engine) as s:
        return durable.get(s, instance_id).status.value
