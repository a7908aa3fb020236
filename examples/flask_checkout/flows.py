"""The checkout flow: reserve the goods, wait for the payment, then ship (or expire).

Its steps change the order through ``ctx.session``: those writes commit in the same
transaction as the step's transition, so each happens exactly once even when a step is
run again after a crash.
"""

from __future__ import annotations

import attrs
from sqlalchemy import update

import gen_durable as durable
from gen_durable import FSM, Await, Cancel, Done

from .orders import Order

PAYMENT_SIGNAL = "payment_succeeded"
PAY_WITHIN = 30 * 60
"""Seconds a customer has to pay before the reservation is given up."""


def checkout_key(order_id: int) -> str:
    """The correlation key of an order's checkout: what the webhook knows it by."""
    return f"order:{order_id}"


class Checkout(FSM):
    """reserve -> await the payment (at most ``PAY_WITHIN``) -> ship, or expire."""

    name = "flask_shop.Checkout"  # the registry name: stays valid if the module moves
    queue = "checkout"
    steps = ("reserve", "ship", "expire")

    @attrs.define
    class State:
        order: int

    def reserve(self, ctx: durable.Context) -> Await:
        _set_order(ctx, status="reserved")  # a real shop would also take the stock here
        return Await(PAYMENT_SIGNAL, then="ship", timeout=PAY_WITHIN, on_timeout="expire")

    def ship(self, ctx: durable.Context) -> Done:
        payment = ctx.awaited[0].payload
        # A carrier's API would be called here with ctx.idempotency_key, which stays the
        # same if this step runs again, so that a retry books one parcel.
        _set_order(ctx, status="shipped", paid=payment["amount"])
        return Done(
            {"order": ctx.state.order, "paid": payment["amount"], "event": payment["event"]}
        )

    def expire(self, ctx: durable.Context) -> Cancel:
        _set_order(ctx, status="expired")
        return Cancel(f"not paid within {PAY_WITHIN // 60} minutes")


def _set_order(ctx: durable.Context, **values: object) -> None:
    ctx.session.execute(update(Order).where(Order.id == ctx.state.order).values(**values))
