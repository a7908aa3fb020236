"""The Flask checkout example (examples/flask_checkout) through Flask's test client."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support.helpers import scalar, snapshot, wait_status
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable.errors import NotFound
from gen_durable.testing import advance, drain

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:  # the examples are not installed: import them from the checkout
    sys.path.insert(0, str(ROOT))

from examples.flask_checkout.app import ENGINE, PaymentProviderError, create_app  # noqa: E402
from examples.flask_checkout.flows import PAY_WITHIN  # noqa: E402
from examples.flask_checkout.orders import Order  # noqa: E402

MUG = {"sku": "mug", "quantity": 2, "amount": 1800}


def paid(order: int, event: str = "evt_1", amount: int = 1800) -> dict[str, Any]:
    return {"id": event, "type": "payment.succeeded", "order": order, "amount": amount}


@contextlib.contextmanager
def make_app(db_url: str, **options: Any) -> Iterator[Flask]:
    app = create_app(db_url, **options)
    app.testing = True
    try:
        yield app
    finally:
        app.extensions[ENGINE].dispose()


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    with make_app(db_url) as app:
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def orders(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as s:
        return [o.as_json() for o in s.scalars(select(Order).order_by(Order.id))]


def checkout(client: FlaskClient) -> int:
    response = client.post("/checkout", json=MUG)
    assert response.status_code == 201, response.json
    return int(response.json["order"])  # type: ignore[index]


def test_checkout_writes_the_order_and_starts_its_flow_in_one_transaction(
    client: FlaskClient, engine: Engine
) -> None:
    response = client.post("/checkout", json=MUG)
    assert response.status_code == 201
    order, flow_id = response.json["order"], response.json["checkout"]  # type: ignore[index]
    assert response.json["pay_at"].endswith(f"order={order}&amount=1800")  # type: ignore[index]
    assert [o["status"] for o in orders(engine)] == ["new"]
    flow = snapshot(engine, f"order:{order}")
    assert (flow.id, flow.status, flow.step, flow.state) == (
        flow_id,
        "available",
        "reserve",
        {"order": order},
    )
    # the same transaction id wrote both rows
    order_xmin = scalar(engine, "SELECT xmin::text FROM orders WHERE id = :i", i=order)
    flow_xmin = scalar(
        engine, "SELECT xmin::text FROM gen_durable.gd_instances WHERE id = :i", i=flow_id
    )
    assert order_xmin == flow_xmin


class Outage(Exception):
    """Not a PaymentProviderError: a bug, which Flask turns into a 500."""


@pytest.mark.parametrize(
    ("error", "status"),
    [(PaymentProviderError("timed out"), 502), (Outage("bug"), 500)],
    ids=["provider-down", "bug"],
)
def test_a_request_that_fails_after_the_insert_keeps_neither_row(
    db_url: str, engine: Engine, error: Exception, status: int
) -> None:
    started: list[int] = []

    def failing_provider(order: Order, checkout_id: int) -> str:
        started.append(checkout_id)  # the flow was inserted, in the request's transaction
        raise error

    with make_app(db_url, payment_pages=failing_provider) as app:
        app.testing = False  # a bug becomes a 500 response, as in production
        response = app.test_client().post("/checkout", json=MUG)
        assert response.status_code == status
    assert len(started) == 1
    assert orders(engine) == []
    with Session(engine) as s, pytest.raises(NotFound):
        durable.get(s, started[0])
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 0


def test_the_payment_webhook_moves_the_flow_on_to_shipping(
    client: FlaskClient, engine: Engine
) -> None:
    order = checkout(client)
    assert [r.step for r in drain(engine)] == ["reserve"]
    status = client.get(f"/orders/{order}").json
    assert status["order"]["status"] == "reserved"  # type: ignore[index]
    assert status["checkout"]["awaiting"] == ["payment_succeeded"]  # type: ignore[index]

    response = client.post("/webhooks/payments", json=paid(order))
    assert response.status_code == 200
    assert response.json["duplicate"] is False  # type: ignore[index]
    assert [r.step for r in drain(engine)] == ["ship"]

    status = client.get(f"/orders/{order}").json
    assert status["order"] == {  # type: ignore[index]
        "id": order,
        **MUG,
        "status": "shipped",
        "paid": 1800,
    }
    assert status["checkout"]["status"] == "done"  # type: ignore[index]
    assert status["checkout"]["result"] == {  # type: ignore[index]
        "order": order,
        "paid": 1800,
        "event": "evt_1",
    }


def test_a_redelivered_webhook_is_stored_once(client: FlaskClient, engine: Engine) -> None:
    order = checkout(client)
    drain(engine)
    first = client.post("/webhooks/payments", json=paid(order))
    again = client.post("/webhooks/payments", json=paid(order))
    assert first.status_code == again.status_code == 200
    assert again.json == {**first.json, "duplicate": True}  # type: ignore[dict-item]
    assert len(snapshot(engine, f"order:{order}").signals) == 1
    assert [r.step for r in drain(engine)] == ["ship"]
    late = client.post("/webhooks/payments", json=paid(order))  # after the flow finished
    assert late.status_code == 200
    assert late.json == {"order": order, "ignored": "the checkout has finished"}
    assert len(snapshot(engine, f"order:{order}").signals) == 1


def test_an_unpaid_order_expires(client: FlaskClient, engine: Engine) -> None:
    order = checkout(client)
    drain(engine)
    advance(engine, PAY_WITHIN - 60)
    assert drain(engine) == []
    advance(engine, 60)
    assert [r.step for r in drain(engine)] == ["expire"]
    status = client.get(f"/orders/{order}").json
    assert status["order"]["status"] == "expired"  # type: ignore[index]
    assert status["checkout"]["status"] == "cancelled"  # type: ignore[index]


def test_unknown_orders_are_404(client: FlaskClient) -> None:
    assert client.get("/orders/99").status_code == 404
    response = client.post("/webhooks/payments", json=paid(99))
    assert response.status_code == 404
    assert response.json == {"error": "no order 99"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/checkout", b"{not json"),
        ("/checkout", b'["a list"]'),
        ("/checkout", b'{"sku": "mug", "quantity": 0, "amount": 1800}'),
        ("/webhooks/payments", b"{not json"),
        ("/webhooks/payments", b'{"type": "payment.succeeded", "order": 1, "amount": 5}'),
        ("/webhooks/payments", b'{"id": "e", "type": "payment.succeeded", "order": "1"}'),
    ],
)
def test_bad_json_is_400_and_writes_nothing(
    client: FlaskClient, engine: Engine, path: str, body: bytes
) -> None:
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert "error" in response.json  # type: ignore[operator]
    assert orders(engine) == []


def test_other_webhook_events_are_acknowledged_and_ignored(client: FlaskClient) -> None:
    response = client.post("/webhooks/payments", json={"id": "evt_9", "type": "payout.paid"})
    assert response.status_code == 200
    assert response.json == {"ignored": "payout.paid"}


def test_the_worker_process_runs_the_flow(client: FlaskClient, db_url: str, engine: Engine) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "examples.flask_checkout.worker"],
        cwd=ROOT,
        env={**os.environ, "GEN_DURABLE_DSN": db_url},
    )  # its log goes to this test's captured output
    try:
        order = checkout(client)
        wait_status(engine, f"order:{order}", "awaiting", timeout=30)
        assert client.post("/webhooks/payments", json=paid(order)).status_code == 200
        wait_status(engine, f"order:{order}", "done", timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    assert code == 0
    assert [o["status"] for o in orders(engine)] == ["shipped"]
