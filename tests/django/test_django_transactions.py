"""``gen_durable.contrib.django`` writes in Django's own transaction, on Django's connection.

The commit cases are ``TransactionTestCase``s: their transactions really commit, and what
they wrote is read back from another connection (``self.engine``).
"""

from __future__ import annotations

from typing import Any

import pytest
from _support.helpers import count, snapshot
from django.db import DatabaseError, connection, transaction
from django.test import TestCase, TransactionTestCase
from sqlalchemy import Engine

import gen_durable as durable
from examples.django_checkout.shop.flows import Checkout, checkout_key
from examples.django_checkout.shop.models import Order
from gen_durable.contrib import django as gd
from gen_durable.errors import DuplicateInstance, NotFound

INSTANCES = "SELECT count(*) FROM gen_durable.gd_instances"


class Boom(Exception):
    pass


def fetch(sql: str, *params: Any) -> Any:
    """One value, read on Django's connection (in its current transaction)."""
    with connection.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    assert row is not None
    return row[0]


class Commit(TransactionTestCase):
    engine: Engine

    def test_a_committed_block_commits_the_insert_with_the_orm_rows_in_its_transaction(
        self,
    ) -> None:
        with transaction.atomic():
            order = Order.objects.create(sku="mug", quantity=1, amount=900)
            txid = int(fetch("SELECT txid_current()"))
            flow = gd.insert(Checkout, state={"order": order.id}, correlation_key="c:1")
            xmin = int(fetch("SELECT xmin::text FROM gen_durable.gd_instances WHERE id = %s", flow))
            order_xmin = int(fetch("SELECT xmin::text FROM shop_order WHERE id = %s", order.id))
            # Not visible outside before the commit: it is the block's own transaction.
            assert count(self.engine, INSTANCES) == 0
        assert xmin == txid % 2**32 == order_xmin
        assert count(self.engine, INSTANCES) == 1
        assert snapshot(self.engine, flow).state == {"order": order.id}
        assert Order.objects.get(pk=order.id).sku == "mug"
        # Django's connection is open and usable, and no transaction is left open on it.
        assert connection.connection is not None and not connection.connection.closed
        assert not connection.in_atomic_block and connection.get_autocommit()
        assert fetch("SELECT 1") == 1

    def test_a_rolled_back_block_leaves_no_instance(self) -> None:
        with pytest.raises(Boom), transaction.atomic():
            order = Order.objects.create(sku="mug", quantity=1, amount=900)
            gd.insert(Checkout, state={"order": order.id}, correlation_key="c:2")
            raise Boom
        assert count(self.engine, INSTANCES) == 0
        assert Order.objects.count() == 0
        assert fetch("SELECT 1") == 1

    def test_outside_a_block_each_call_commits_as_the_orm_does(self) -> None:
        flow = gd.insert(Checkout, state={"order": 7}, correlation_key="c:3")
        assert snapshot(self.engine, flow).status == "available"
        assert connection.get_autocommit() and not connection.in_atomic_block

    def test_signal_cancel_and_retry_join_the_block(self) -> None:
        flow = gd.insert(Checkout, state={"order": 8}, correlation_key="c:4")
        with pytest.raises(Boom), transaction.atomic():
            gd.signal("c:4", "payment_succeeded", {"amount": 1})
            assert gd.cancel(flow) is True
            raise Boom
        assert snapshot(self.engine, flow).signals == ()
        assert snapshot(self.engine, flow).status == "available"
        with transaction.atomic():
            assert gd.cancel(flow, "changed my mind") is True
            assert gd.retry(flow) == flow
        assert snapshot(self.engine, flow).status == "available"

    def test_a_typed_error_leaves_the_block_usable(self) -> None:
        with transaction.atomic():
            first = gd.insert(Checkout, state={"order": 9}, correlation_key="c:5")
            with pytest.raises(DuplicateInstance):
                gd.insert(Checkout, state={"order": 9}, correlation_key="c:5", on_conflict="raise")
            [second] = gd.insert_all([Checkout.new(state={"order": 10}, correlation_key="c:6")])
            Order.objects.create(sku="cup", quantity=1, amount=1)
        assert {snapshot(self.engine, i).correlation_key for i in (first, second)} == {
            "c:5",
            "c:6",
        }
        assert Order.objects.count() == 1


class ReadsAndErrors(TestCase):
    def test_get_decodes_jsonb_as_json(self) -> None:
        # Django's connection loads jsonb as text (its JSONField decodes it); the client
        # sees JSON, and Django's own reads still see text.
        flow = gd.insert(Checkout, state={"order": 11}, correlation_key=checkout_key(11))
        found = gd.get(checkout_key(11))
        assert (found.id, found.state) == (flow, {"order": 11})
        assert fetch("SELECT state FROM gen_durable.gd_instances WHERE id = %s", flow) == (
            '{"order": 11}'
        )
        with pytest.raises(NotFound):
            gd.get("no such key")

    def test_several_calls_on_one_connection_and_another_alias_by_name(self) -> None:
        with gd.connection("default") as conn:
            flow = durable.insert(conn, Checkout, state={"order": 12})
            assert durable.get(conn, flow).state == {"order": 12}

    def test_a_broken_block_is_refused_as_the_orm_refuses_it(self) -> None:
        with transaction.atomic():
            try:
                with transaction.atomic(savepoint=False), connection.cursor() as cur:
                    cur.execute("SELECT 1/0")
            except DatabaseError:
                pass  # no savepoint to roll back to: Django marks the block for rollback
            assert connection.needs_rollback
            with pytest.raises(transaction.TransactionManagementError):
                gd.insert(Checkout, state={"order": 13})
            transaction.set_rollback(True)
