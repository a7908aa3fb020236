"""The client API inside the caller's transaction: results, typed errors, nothing written."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import pytest
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job
from gen_durable.errors import (
    DuplicateInstance,
    InvalidPayload,
    InvalidState,
    InvalidTransition,
    NotFound,
    UnknownClass,
    ValidationError,
)


class Order(FSM):
    name = "api.Order"
    queue = "orders"
    priority = 3
    steps = ("start",)

    @attrs.define
    class State:
        order: int
        note: str = ""

    def start(self, ctx: durable.Context) -> Done:
        return Done()


class Mail(Job):
    name = "api.Mail"

    @attrs.define
    class Args:
        to: str

    def perform(self, args: Any) -> None:
        return None


def count(session: Session, table: str = "gd_instances") -> int:
    return int(session.execute(text(f"SELECT count(*) FROM gen_durable.{table}")).scalar_one())


def test_insert_returns_an_int_id_and_stores_the_typed_state(session: Session) -> None:
    iid = durable.insert(session, Order, state=Order.State(order=1, note="hi"))
    snap = durable.get(session, iid)
    assert isinstance(iid, int)
    assert snap.state == {"order": 1, "note": "hi"}
    assert (snap.fsm, snap.queue, snap.priority, snap.step) == ("api.Order", "orders", 3, "start")
    assert snap.status == "available" and snap.attempt == 0 and snap.version == 0


def test_insert_accepts_a_connection_too(conn: Connection) -> None:
    iid = durable.insert(conn, Mail, args={"to": "a@example.com"}, queue="mail", priority=0)
    snap = durable.get(conn, iid)
    assert snap.state == {"to": "a@example.com"} and snap.queue == "mail"


def test_a_live_correlation_key_returns_the_existing_id_or_raises(session: Session) -> None:
    first = durable.insert(session, Order, state={"order": 1}, correlation_key="o:1")
    assert durable.insert(session, Order, state={"order": 2}, correlation_key="o:1") == first
    with pytest.raises(DuplicateInstance) as info:
        durable.insert(
            session, Order, state={"order": 3}, correlation_key="o:1", on_conflict="raise"
        )
    assert info.value.existing_id == first
    assert count(session) == 1


def test_a_finished_instance_frees_its_key_and_reads_fall_back_to_it(session: Session) -> None:
    first = durable.insert(session, Order, state={"order": 1}, correlation_key="o:2")
    assert durable.cancel(session, "o:2") is True
    assert durable.cancel(session, "o:2") is False  # nothing live; the key has history
    second = durable.insert(session, Order, state={"order": 2}, correlation_key="o:2")
    assert second != first
    assert durable.get(session, "o:2").id == second  # the live one first
    durable.cancel(session, second)
    assert durable.get(session, "o:2").id == second  # then the newest finished


def test_insert_all_is_one_batch_and_dedups_keys(session: Session) -> None:
    ids = durable.insert_all(
        session,
        [Order.new(state={"order": n}, correlation_key=f"b:{n % 2}") for n in range(4)]
        + [Mail.new(args={"to": "x@example.com"})],
    )
    assert len(ids) == 5 and ids[0] == ids[2] and ids[1] == ids[3]
    assert count(session) == 3


def test_insert_all_raise_writes_none_of_the_batch(session: Session) -> None:
    durable.insert(session, Order, state={"order": 0}, correlation_key="c:1")
    before = count(session)
    with pytest.raises(DuplicateInstance):
        durable.insert_all(
            session,
            [Order.new(state={"order": 1}), Order.new(state={"order": 2}, correlation_key="c:1")],
            on_conflict="raise",
        )
    assert count(session) == before  # the savepoint rolled the batch back
    assert durable.insert(session, Order, state={"order": 3}) > 0  # the transaction lives on


def test_signal_by_key_reports_ids_and_duplicates(session: Session) -> None:
    iid = durable.insert(session, Order, state={"order": 5}, correlation_key="s:5")
    first = durable.signal(session, "s:5", "paid", {"amount": 10}, idempotency_key="evt_1")
    again = durable.signal(session, "s:5", "paid", {"amount": 10}, idempotency_key="evt_1")
    other = durable.signal(session, iid, "paid", [1, 2])
    assert (first.instance_id, first.duplicate) == (iid, False)
    assert (again.signal_id, again.duplicate) == (first.signal_id, True)
    assert other.signal_id != first.signal_id
    assert [s.payload for s in durable.get(session, iid).signals] == [{"amount": 10}, [1, 2]]


def test_a_signal_to_a_finished_instance_by_id_is_kept(session: Session) -> None:
    iid = durable.insert(session, Order, state={"order": 6})
    durable.cancel(session, iid)
    durable.signal(session, iid, "late")
    assert [s.name for s in durable.get(session, iid).signals] == ["late"]


def test_retry_only_applies_to_failed_or_cancelled(session: Session) -> None:
    iid = durable.insert(session, Order, state={"order": 7})
    with pytest.raises(InvalidTransition):
        durable.retry(session, iid)
    durable.cancel(session, iid)
    assert durable.retry(session, iid) == iid
    snap = durable.get(session, iid)
    assert snap.status == "available" and snap.finished_at is None


def test_retry_refuses_when_another_live_instance_took_the_key(session: Session) -> None:
    old = durable.insert(session, Order, state={"order": 8}, correlation_key="r:8")
    durable.cancel(session, old)
    new = durable.insert(session, Order, state={"order": 9}, correlation_key="r:8")
    with pytest.raises(DuplicateInstance) as info:
        durable.retry(session, old)
    assert info.value.existing_id == new
    assert durable.get(session, old).status == "cancelled"  # the transaction survived


class NotJSON:
    pass


class Unregistered(FSM):
    abstract = True


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: durable.insert(s, Unregistered), UnknownClass),
        (lambda s: durable.insert(s, "no.such.Class"), UnknownClass),
        (lambda s: durable.insert(s, dict), UnknownClass),  # type: ignore[arg-type]
        (lambda s: durable.insert(s, Order, state={"order": "x"}), InvalidState),
        (lambda s: durable.insert(s, Order, state={"order": 1, "extra": 2}), InvalidState),
        (lambda s: durable.insert(s, Order), InvalidState),
        (lambda s: durable.insert(s, Mail, args={"to": 1, "cc": 2}), InvalidState),
        (lambda s: durable.insert(s, Mail, state={"to": "x"}), ValidationError),
        (lambda s: durable.insert(s, Order, state={"order": 1}, priority=10), ValidationError),
        (lambda s: durable.insert(s, Order, state={"order": 1}, queue=""), ValidationError),
        (lambda s: durable.insert(s, Order, state={"order": 1}, delay=-1), ValidationError),
        (
            lambda s: durable.insert(s, Order, state={"order": 1}, run_at=datetime(2030, 1, 1)),
            ValidationError,
        ),
        (lambda s: durable.insert(s, Order, state={"order": 1}, max_attempts=0), ValidationError),
        (lambda s: durable.insert(s, Order, state={"order": 1}, on_conflict="x"), ValidationError),
        (lambda s: durable.insert_all(s, [object()]), ValidationError),
        (lambda s: durable.signal(s, "nobody", "paid"), NotFound),
        (lambda s: durable.signal(s, 10**12, "paid"), NotFound),
        (lambda s: durable.signal(s, "o", ""), ValidationError),
        (lambda s: durable.signal(s, 1.5, "paid"), ValidationError),  # type: ignore[arg-type]
        (lambda s: durable.signal(s, "o", "paid", {"x": NotJSON()}), InvalidPayload),
        (lambda s: durable.signal(s, "o", "paid", float("nan")), InvalidPayload),
        (lambda s: durable.cancel(s, "nobody"), NotFound),
        (lambda s: durable.retry(s, 10**12), NotFound),
        (lambda s: durable.get(s, "nobody"), NotFound),
        (lambda s: durable.insert(object(), Order, state={"order": 1}), ValidationError),  # type: ignore[arg-type]
    ],
)
def test_bad_input_raises_a_typed_error_and_writes_nothing(
    session: Session, call: Any, error: type[Exception]
) -> None:
    durable.insert(session, Order, state={"order": 1}, correlation_key="o")
    before = (count(session), count(session, "gd_signals"))
    with pytest.raises(error):
        call(session)
    assert (count(session), count(session, "gd_signals")) == before
    durable.signal(session, "o", "still-usable")  # the caller's transaction survived
