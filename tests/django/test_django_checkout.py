"""The Django checkout example (examples/django_checkout) through Django's test client.

``TransactionTestCase``: each request commits as in production (``ATOMIC_REQUESTS``), and
the worker (``drain``) runs the flows from its own connection.
"""

from __future__ import annotations

import json
from typing import Any

from _support.helpers import count, snapshot
from django.db import connection
from django.test import Client, TransactionTestCase
from sqlalchemy import Engine

from examples.django_checkout.shop import views
from examples.django_checkout.shop.flows import PAY_WITHIN
from examples.django_checkout.shop.models import Order
from gen_durable.testing import advance, drain

MUG = {"sku": "mug", "quantity": 2, "amount": 1800}


def paid(order: int, event: str = "evt_1", amount: int = 1800) -> dict[str, Any]:
    return {"id": event, "type": "payment.succeeded", "order": order, "amount": amount}


class Outage(Exception):
    """Not a PaymentProviderError: a bug, which Django turns into a 500."""


class Checkout(TransactionTestCase):
    engine: Engine

    def post(self, path: str, body: Any, **extra: Any) -> Any:
        return self.client.post(path, json.dumps(body), content_type="application/json", **extra)

    def checkout(self) -> int:
        response = self.post("/checkout", MUG)
        assert response.status_code == 201, response.content
        return int(response.json()["order"])

    def status(self, order: int) -> Any:
        response = self.client.get(f"/orders/{order}")
        assert response.status_code == 200
        return response.json()

    def test_checkout_writes_the_order_and_starts_its_flow_in_one_transaction(self) -> None:
        response = self.post("/checkout", MUG)
        assert response.status_code == 201
        order, flow_id = response.json()["order"], response.json()["checkout"]
        assert response.json()["pay_at"].endswith(f"order={order}&amount=1800")
        flow = snapshot(self.engine, f"order:{order}")
        assert (flow.id, flow.status, flow.step, flow.state) == (
            flow_id,
            "available",
            "reserve",
            {"order": order},
        )
        assert [o.status for o in Order.objects.all()] == ["new"]
        with connection.cursor() as cur:  # the same transaction wrote both rows
            cur.execute(
                "SELECT (SELECT xmin::text FROM shop_order WHERE id = %s),"
                " (SELECT xmin::text FROM gen_durable.gd_instances WHERE id = %s)",
                [order, flow_id],
            )
            order_xmin, flow_xmin = cur.fetchone() or (None, None)
        assert order_xmin == flow_xmin is not None

    def test_a_request_that_fails_after_the_insert_keeps_neither_row(self) -> None:
        started: list[int] = []

        def provider(error: Exception) -> views.PaymentPages:
            def failing(order: Order, checkout_id: int) -> str:
                started.append(checkout_id)  # inserted, in the request's transaction
                raise error

            return failing

        original = views.payment_pages
        try:
            views.payment_pages = provider(views.PaymentProviderError("timed out"))
            assert self.post("/checkout", MUG).status_code == 502
            views.payment_pages = provider(Outage("bug"))
            client = Client(raise_request_exception=False)  # a 500, as in production
            response = client.post("/checkout", json.dumps(MUG), content_type="application/json")
            assert response.status_code == 500
        finally:
            views.payment_pages = original
        assert len(started) == 2
        assert Order.objects.count() == 0
        assert count(self.engine, "SELECT count(*) FROM gen_durable.gd_instances") == 0

    def test_the_payment_webhook_moves_the_flow_on_to_shipping(self) -> None:
        order = self.checkout()
        assert [r.step for r in drain(self.engine)] == ["reserve"]
        status = self.status(order)
        assert status["order"]["status"] == "reserved"
        assert status["checkout"]["awaiting"] == ["payment_succeeded"]
        assert status["checkout"]["state"] == {"order": order}

        response = self.post("/webhooks/payments", paid(order))
        assert response.status_code == 200
        assert response.json()["duplicate"] is False
        assert [r.step for r in drain(self.engine)] == ["ship"]

        status = self.status(order)
        assert status["order"] == {"id": order, **MUG, "status": "shipped", "paid": 1800}
        assert status["checkout"]["status"] == "done"
        assert status["checkout"]["result"] == {"order": order, "paid": 1800, "event": "evt_1"}

    def test_a_redelivered_webhook_is_stored_once(self) -> None:
        order = self.checkout()
        drain(self.engine)
        first = self.post("/webhooks/payments", paid(order))
        again = self.post("/webhooks/payments", paid(order))
        assert first.status_code == again.status_code == 200
        assert again.json() == {**first.json(), "duplicate": True}
        assert len(snapshot(self.engine, f"order:{order}").signals) == 1
        assert [r.step for r in drain(self.engine)] == ["ship"]
        late = self.post("/webhooks/payments", paid(order))  # after the flow finished
        assert late.json() == {"order": order, "ignored": "the checkout has finished"}

    def test_an_unpaid_order_expires(self) -> None:
        order = self.checkout()
        drain(self.engine)
        advance(self.engine, PAY_WITHIN)
        assert [r.step for r in drain(self.engine)] == ["expire"]
        status = self.status(order)
        assert status["order"]["status"] == "expired"
        assert status["checkout"]["status"] == "cancelled"

    def test_unknown_orders_and_bad_json(self) -> None:
        assert self.client.get("/orders/99").status_code == 404
        assert self.post("/webhooks/payments", paid(99)).json() == {"error": "no order 99"}
        for path, body in [
            ("/checkout", b"{not json"),
            ("/checkout", b'{"sku": "mug", "quantity": 0, "amount": 1800}'),
            ("/webhooks/payments", b'{"id": "e", "type": "payment.succeeded", "order": "1"}'),
        ]:
            response = self.client.post(path, body, content_type="application/json")
            assert response.status_code == 400, path
        assert Order.objects.count() == 0
