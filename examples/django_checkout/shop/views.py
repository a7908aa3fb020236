"""The shop's views: checkout, the payment provider's webhook, and order status.

Each request is one transaction (``ATOMIC_REQUESTS``): the order row and its checkout
flow are written together or not at all. ``gen_durable.contrib.django``'s functions
write on Django's connection, in that transaction, and never commit it themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from gen_durable.contrib import django as durable
from gen_durable.errors import NotFound

from .flows import PAYMENT_SIGNAL, Checkout, checkout_key
from .models import Order


class PaymentProviderError(Exception):
    """The payment provider could not open a payment page."""


PaymentPages = Callable[[Order, int], str]
"""Opens the provider's payment page for an order (and its checkout id); returns its URL."""


def hosted_payment_page(order: Order, checkout_id: int) -> str:
    """Stands in for the provider's API, which a real shop calls over HTTP (and can fail)."""
    return f"https://payments.example/pay?order={order.id}&amount={order.amount}"


payment_pages: PaymentPages = hosted_payment_page
"""What ``checkout`` calls (tests replace it)."""


@csrf_exempt
@require_POST
def checkout(request: HttpRequest) -> JsonResponse:
    body = _json(request)
    if not isinstance(body, dict):
        return problem(400, "expected a JSON object")
    sku, quantity, amount = body.get("sku"), body.get("quantity"), body.get("amount")
    if not (isinstance(sku, str) and sku and counts(quantity) and counts(amount)):
        return problem(400, "expected sku (text), quantity and amount (cents, integers > 0)")
    order = Order.objects.create(sku=sku, quantity=quantity, amount=amount)
    checkout_id = durable.insert(
        Checkout, state={"order": order.id}, correlation_key=checkout_key(order.id)
    )
    try:
        pay_at = payment_pages(order, checkout_id)
    except PaymentProviderError as exc:
        transaction.set_rollback(True)  # the order and its flow are rolled back
        return problem(502, f"the payment provider is unavailable: {exc}")
    return JsonResponse({"order": order.id, "checkout": checkout_id, "pay_at": pay_at}, status=201)


@csrf_exempt
@require_POST
def payment_webhook(request: HttpRequest) -> JsonResponse:
    event = _json(request)
    if not (isinstance(event, dict) and is_text(event.get("id")) and is_text(event.get("type"))):
        return problem(400, "expected a JSON event with an id and a type")
    if event["type"] != "payment.succeeded":
        return JsonResponse({"ignored": event["type"]})  # providers send many kinds of events
    order_id, amount = event.get("order"), event.get("amount")
    if not (counts(order_id) and counts(amount)):
        return problem(400, "expected order and amount (cents) as integers > 0")
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return problem(404, f"no order {order_id}")
    try:
        sent = durable.signal(
            checkout_key(order.id),
            PAYMENT_SIGNAL,
            {"amount": amount, "event": event["id"]},
            idempotency_key=event["id"],  # a redelivered event is stored once
        )
    except NotFound:  # its checkout has finished: a late redelivery changes nothing
        return JsonResponse({"order": order.id, "ignored": "the checkout has finished"})
    return JsonResponse({"order": order.id, "signal": sent.signal_id, "duplicate": sent.duplicate})


@require_GET
def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return problem(404, f"no order {order_id}")
    flow = durable.get(checkout_key(order.id))
    return JsonResponse(
        {
            "order": order.as_json(),
            "checkout": {
                "id": flow.id,
                "status": flow.status.value,
                "step": flow.step,
                "state": flow.state,
                "awaiting": list(flow.awaiting or ()),
                "result": flow.result,
                "error": flow.error,
            },
        }
    )


def problem(status: int, message: str) -> JsonResponse:
    """A JSON error response."""
    return JsonResponse({"error": message}, status=status)


def _json(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body)
    except ValueError:
        return None


def counts(value: Any) -> bool:
    """An integer > 0 (JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
