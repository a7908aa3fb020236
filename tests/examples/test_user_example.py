"""Tests of a checkout flow, written the way a user of gen_durable writes them."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Fail, Job
from gen_durable.testing import assert_inserted, assert_signalled

# -- the application code under test ----------------------------------------------------


class SendReceipt(Job):
    def perform(self, args: dict[str, Any]) -> str:
        return f"receipt for order {args['order']}"


class Checkout(FSM):
    queue = "checkout"
    steps = ("start", "ship", "expire")

    @attrs.define
    class State:
        order: int

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Await("paid", then="ship", timeout=3600, on_timeout="expire")
        if name == "ship":
            amount = ctx.awaited[0].payload["amount"]
            durable.insert(ctx.session, SendReceipt, args={"order": ctx.state.order})
            return Done({"order": ctx.state.order, "amount": amount})
        return Fail("not paid within an hour")


def payment_webhook(session: Session, order: int, amount: int) -> None:
    durable.signal(session, f"order:{order}", "paid", {"amount": amount})


# -- the tests ---------------------------------------------------------------------------


@pytest.fixture
def order(durable_engine: Engine) -> int:
    with Session(durable_engine) as s, s.begin():
        return durable.insert(s, Checkout, state={"order": 42}, correlation_key="order:42")


def test_a_paid_order_ships_and_sends_a_receipt(
    durable_engine: Engine, durable_drain: Any, order: int
) -> None:
    durable_drain()  # "start" runs and parks on the await
    with Session(durable_engine) as s, s.begin():
        payment_webhook(s, order=42, amount=100)
        assert_signalled(s, "order:42", "paid", {"amount": 100})

    steps = [(r.fsm.rsplit(".", 1)[-1], r.step) for r in durable_drain()]
    assert steps == [("Checkout", "ship"), ("SendReceipt", "perform")]
    with Session(durable_engine) as s:
        assert durable.get(s, order).result == {"order": 42, "amount": 100}
        receipt = assert_inserted(s, SendReceipt, args={"order": 42}, status="done")
        assert receipt.result == "receipt for order 42"


def test_an_unpaid_order_expires_after_an_hour(
    durable_engine: Engine, durable_drain: Any, durable_advance: Any, order: int
) -> None:
    durable_drain()
    durable_advance(50 * 60)
    assert durable_drain() == []  # ten minutes to go: still waiting
    durable_advance(10 * 60)
    assert [r.step for r in durable_drain()] == ["expire"]
    with Session(durable_engine) as s:
        snapshot = durable.get(s, order)
    assert snapshot.status == "failed"
    assert snapshot.error["message"] == "not paid within an hour"


def test_the_flow_emits_telemetry(durable_drain: Any, durable_events: Any, order: int) -> None:
    durable_drain()
    stop = durable_events.of("step.stop")[0]
    assert (stop["instance_id"], stop["step"], stop["kind"]) == (order, "start", "await")
