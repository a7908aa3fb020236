"""The checkout flow: reserve the goods, wait for the payment, then ship (or expire).

Its steps change the order through ``ctx.session``, a SQLAlchemy session whose writes
commit in the same transaction as the step's transition, so each happens exactly once
even when a step runs again after a crash. That session is not Django's connection: the
steps write the order's table with SQLAlchemy Core (:data:`ORDERS`, the columns they
touch), not with the Django model (see docs/django.md).
"""

from __future__ import annotations

import attrs
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text, update

from gen_durable import FSM, Await, Cancel, Context, Done

PAYMENT_SIGNAL = "payment_succeeded"
PAY_WITHIN = 30 * 60
"""Seconds a customer has to pay before the reservation is given up."""

ORDERS = Table(
    "shop_order",  # the Order model's db_table
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("status", Text),
    Column("paid", Integer),
)


def checkout_key(order_id: int) -> str:
    """The correlation key of an order's checkout: what the webhook knows it by."""
    return f"order:{order_id}"


@attrs.define
class CheckoutState:
    order: int


class Checkout(FSM[CheckoutState]):
    """reserve -> await the payment (at most ``PAY_WITHIN``) -> ship, or expire."""

    name = "django_shop.Checkout"  # the registry name: stays valid if the module moves
    queue = "checkout"
    steps = ("reserve", "ship", "expire")  # the state is loaded as the base's CheckoutState

    def reserve(self, ctx: Context[CheckoutState]) -> Await:
        _set_order(ctx, status="reserved")  # a real shop would also take the stock here
        return Await(PAYMENT_SIGNAL, then="ship", timeout=PAY_WITHIN, on_timeout="expire")

    def ship(self, ctx: Context[CheckoutState]) -> Done:
        payment = ctx.awaited[0].payload
        # A carrier's API would be called here with ctx.idempotency_key, which stays the
        # same if this step runs again, so that a retry books one parcel.
        _set_order(ctx, status="shipped", paid=payment["amount"])
        return Done(
            {"order": ctx.state.order, "paid": payment["amount"], "event": payment["event"]}
        )

    def expire(self, ctx: Context[CheckoutState]) -> Cancel:
        _set_order(ctx, status="expired")
        return Cancel(f"not paid within {PAY_WITHIN // 60} minutes")


def _set_order(ctx: Context[CheckoutState], **values: object) -> None:
    ctx.session.execute(update(ORDERS).where(ORDERS.c.id == ctx.state.order).values(**values))
