"""The shop's web app: checkout, the payment provider's webhook, and order status.

Each request has one SQLAlchemy session and one transaction, committed when the response
is a success and rolled back otherwise (an error response, an exception, a failed
commit): the order row and its checkout flow are written together or not at all.

Run it with ``flask --app examples.flask_checkout.app run`` (see README.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

import gen_durable as durable
from gen_durable.devserver import ENV_DSN, to_sqlalchemy_url
from gen_durable.errors import NotFound

from .flows import PAYMENT_SIGNAL, Checkout, checkout_key
from .orders import Order, create_tables

ENGINE = "flask_checkout.engine"
"""Where the app keeps its engine: ``app.extensions[ENGINE]``."""


class PaymentProviderError(Exception):
    """The payment provider could not open a payment page."""


PaymentPages = Callable[[Order, int], str]
"""Opens the provider's payment page for an order (and its checkout id); returns its URL."""


def hosted_payment_page(order: Order, checkout_id: int) -> str:
    """Stands in for the provider's API, which a real shop calls over HTTP (and can fail)."""
    return f"https://payments.example/pay?order={order.id}&amount={order.amount}"


def create_app(
    database_url: str | None = None, *, payment_pages: PaymentPages = hosted_payment_page
) -> Flask:
    """The shop on ``database_url`` (by default the ``GEN_DURABLE_DSN`` environment variable).

    The database needs gen_durable's schema (``gen-durable migrate``; ``gen-durable dev``
    installs it); the shop's own table is created here if it is missing.
    """
    url = database_url or os.environ.get(ENV_DSN)
    if not url:
        raise RuntimeError(f"pass a database URL or set {ENV_DSN}")
    engine = create_engine(to_sqlalchemy_url(url))
    create_tables(engine)
    sessions = sessionmaker(engine)
    app = Flask(__name__)
    app.extensions[ENGINE] = engine

    def db() -> Session:
        """The request's session; its transaction ends with the request."""
        if "db" not in g:
            g.db = sessions()
        session: Session = g.db
        return session

    @app.after_request
    def end_transaction(response: Response) -> Response:
        session = g.get("db")
        if session is not None:
            if response.status_code < 400:
                session.commit()  # should this fail, the client gets a 500 instead
            else:
                session.rollback()
        return response

    @app.teardown_request
    def close_session(exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()  # rolls back what an exception left uncommitted

    @app.post("/checkout")
    def checkout() -> ResponseReturnValue:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return problem(400, "expected a JSON object")
        sku, quantity, amount = body.get("sku"), body.get("quantity"), body.get("amount")
        if not (isinstance(sku, str) and sku and counts(quantity) and counts(amount)):
            return problem(400, "expected sku (text), quantity and amount (cents, integers > 0)")
        session = db()
        order = Order(sku=sku, quantity=quantity, amount=amount)
        session.add(order)
        session.flush()  # the order's id, which names its checkout
        checkout_id = durable.insert(
            session, Checkout, state={"order": order.id}, correlation_key=checkout_key(order.id)
        )
        try:
            pay_at = payment_pages(order, checkout_id)
        except PaymentProviderError as exc:  # the order and its flow are rolled back
            return problem(502, f"the payment provider is unavailable: {exc}")
        return jsonify(order=order.id, checkout=checkout_id, pay_at=pay_at), 201

    @app.post("/webhooks/payments")
    def payment_webhook() -> ResponseReturnValue:
        event = request.get_json(silent=True)
        if not (
            isinstance(event, dict) and is_text(event.get("id")) and is_text(event.get("type"))
        ):
            return problem(400, "expected a JSON event with an id and a type")
        if event["type"] != "payment.succeeded":
            return jsonify(ignored=event["type"])  # providers send many kinds of events
        order_id, amount = event.get("order"), event.get("amount")
        if not (counts(order_id) and counts(amount)):
            return problem(400, "expected order and amount (cents) as integers > 0")
        session = db()
        order = session.get(Order, order_id)
        if order is None:
            return problem(404, f"no order {order_id}")
        try:
            sent = durable.signal(
                session,
                checkout_key(order.id),
                PAYMENT_SIGNAL,
                {"amount": amount, "event": event["id"]},
                idempotency_key=event["id"],  # a redelivered event is stored once
            )
        except NotFound:  # its checkout has finished: a late redelivery changes nothing
            return jsonify(order=order.id, ignored="the checkout has finished")
        return jsonify(order=order.id, signal=sent.signal_id, duplicate=sent.duplicate)

    @app.get("/orders/<int:order_id>")
    def order_status(order_id: int) -> ResponseReturnValue:
        session = db()
        order = session.get(Order, order_id)
        if order is None:
            return problem(404, f"no order {order_id}")
        flow = durable.get(session, checkout_key(order.id))
        return jsonify(
            order=order.as_json(),
            checkout={
                "id": flow.id,
                "status": flow.status.value,
                "step": flow.step,
                "awaiting": list(flow.awaiting or ()),
                "result": flow.result,
                "error": flow.error,
            },
        )

    return app


def problem(status: int, message: str) -> tuple[Response, int]:
    """A JSON error response."""
    return jsonify(error=message), status


def counts(value: Any) -> bool:
    """An integer > 0 (JSON ``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
