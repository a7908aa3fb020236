"""Types are checked, never coerced: at insert, in every outcome's state, and at load.

Issue 14, items 3 and 5. A value of the wrong type for a typed ``State``/``Args`` field
(``1.7`` or ``"12"`` for an ``int``, ``5`` or ``None`` for a ``str``, ``"false"`` for a
``bool``) is refused at insert, before any SQL, and nothing is written; returned by a step
(any outcome's ``state=``, an in-place change of ``ctx.state``, a ``Spawn`` child, an
``on_error`` compensation) it fails the attempt that produced it with ``InvalidState``
naming the field, and the stored state stays as it was; found in a stored row it fails the
attempt that loads it. Ints of any size come back exactly.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from _support.bad_input import refused
from _support.helpers import snapshot
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Job, Next, Sleep, Spawn
from gen_durable.errors import InvalidPayload, InvalidState
from gen_durable.testing import drain

QUEUE = "strict-types"
BIG = 2**80
NEGATIVE = -(2**70)


@attrs.define
class Order:
    order: int
    label: str = ""
    paid: bool = False
    total: float = 0.0
    lines: list[int] = attrs.Factory(list)


class Typed(FSM):
    """Does to its state, at run time, what ``ctx.state.label`` names (see ``start``)."""

    name = "strict_types.Typed"
    queue = QUEUE
    steps = ("start", "end")
    state_type = Order
    backoff = Backoff(base=0.0, factor=1.0, max=0.0, jitter=0.0)

    def start(self, ctx: durable.Context) -> Any:
        how = ctx.state.label
        if how == "retry" and ctx.attempt > 1:
            return Next("end", state=Order(order=2, label="fixed"))
        if how in ("retry", "next"):
            return Next("end", state=Order(order="12", label=how))  # type: ignore[arg-type]
        if how == "next_json":
            return Next("end", state={"order": 1.7})
        if how == "await":
            return Await("go", then="end", state={"order": 1, "paid": "false"})
        if how == "sleep":
            return Sleep(60, then="end", state={"order": 1, "lines": [1, True]})
        if how == "spawn":
            return Spawn([Typed.new(state={"order": 1, "label": 5})], then="end")
        if how == "compensate":
            raise RuntimeError("compensate me")
        if how in ("in_place", "done"):
            ctx.state.order = 1.7  # in place: kept by an outcome that omits state=
            return Done() if how == "done" else Next("end")
        return Next("end")

    def end(self, ctx: durable.Context) -> Done:
        return Done({"order": ctx.state.order, "label": ctx.state.label})

    def on_error(self, name: str, error: BaseException, ctx: durable.Context) -> Any:
        if isinstance(error, RuntimeError):
            return Next("end", state={"order": True})
        return None


class Untyped(FSM):
    name = "strict_types.Untyped"
    queue = QUEUE
    steps = ("start", "end")

    def start(self, ctx: durable.Context) -> Any:
        if ctx.state.get("how") == "int_keys":
            return Next("end", state={1: "one", "1": "uno"})
        return Next("end")

    def end(self, ctx: durable.Context) -> Done:
        return Done(ctx.state)


class Mailer(Job):
    name = "strict_types.Mailer"
    queue = QUEUE

    @attrs.define
    class Args:
        to: str
        subject: str
        retries: int = 0

    def perform(self, args: Args) -> dict[str, Any]:
        return {"to": args.to, "retries": args.retries}


def _insert(engine: Engine, cls: type[FSM], state: Any, **options: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, state=state, **options)


# --- insert, Cls.new, insert_all -------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"order": 1.7}, "$.order: expected int, got float"),
        ({"order": "12"}, "$.order: expected int, got str"),
        ({"order": True}, "$.order: expected int, got bool"),
        ({"order": 3.0}, "$.order: expected int, got float"),
        ({"order": 1, "label": 5}, "$.label: expected str, got int"),
        ({"order": 1, "label": None}, "$.label: expected str, got None"),
        ({"order": 1, "paid": "false"}, "$.paid: expected bool, got str"),
        ({"order": 1, "paid": 1}, "$.paid: expected bool, got int"),
        ({"order": 1, "lines": ["1"]}, "$.lines[0]: expected int, got str"),
        (Order(order=1.7), "$.order: expected int, got float"),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_insert_refuses_a_wrong_type_names_the_field_and_writes_nothing(
    engine: Engine, state: Any, message: str
) -> None:
    expected = f"state does not fit Order: {message}"
    error = refused(engine, lambda s: durable.insert(s, Typed, state=state), InvalidState)
    assert str(error) == expected
    error = refused(engine, lambda s: durable.insert_all(s, [Typed.new(state=state)]), InvalidState)
    assert str(error) == expected


def test_job_args_are_checked_and_missing_ones_named(engine: Engine) -> None:
    error = refused(engine, lambda s: durable.insert(s, Mailer), InvalidState)
    assert str(error) == "args does not fit Mailer.Args: missing required field(s): to, subject"
    error = refused(
        engine, lambda s: durable.insert(s, Mailer, args={"to": 5, "subject": "s"}), InvalidState
    )
    assert str(error) == "args does not fit Mailer.Args: $.to: expected str, got int"
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Mailer, args={"to": "a@b", "subject": "hi", "retries": BIG})
    drain(engine, queues=[QUEUE])
    assert snapshot(engine, iid).result == {"to": "a@b", "retries": BIG}


def test_untyped_state_with_keys_that_are_not_text_is_refused(engine: Engine) -> None:
    error = refused(
        engine, lambda s: durable.insert(s, Untyped, state={1: "one", "1": "uno"}), InvalidPayload
    )
    assert "may only have text keys" in str(error)


# --- ints of any size --------------------------------------------------------------------------


def test_ints_of_any_size_round_trip_exactly_through_jsonb(engine: Engine) -> None:
    typed = _insert(engine, Typed, {"order": BIG, "lines": [NEGATIVE, BIG]})
    untyped = _insert(engine, Untyped, {"big": BIG, "nested": [{"negative": NEGATIVE}]})
    drain(engine, queues=[QUEUE])
    snap = snapshot(engine, typed)
    assert (snap.status, snap.state["order"], snap.state["lines"]) == ("done", BIG, [NEGATIVE, BIG])
    assert snap.result == {"order": BIG, "label": ""}
    snap = snapshot(engine, untyped)
    assert snap.result == snap.state == {"big": BIG, "nested": [{"negative": NEGATIVE}]}


# --- what a step stores ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "field"),
    [
        ("next", "$.order: expected int, got str"),
        ("next_json", "$.order: expected int, got float"),
        ("in_place", "$.order: expected int, got float"),
        ("done", "$.order: expected int, got float"),
        ("await", "$.paid: expected bool, got str"),
        ("sleep", "$.lines[1]: expected int, got bool"),
        ("spawn", "$.label: expected str, got int"),
    ],
)
def test_a_step_storing_a_wrong_type_fails_that_attempt_and_stores_nothing(
    engine: Engine, how: str, field: str
) -> None:
    iid = _insert(engine, Typed, {"order": 1, "label": how}, max_attempts=1)
    drain(engine, queues=[QUEUE])
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.state, snap.result, snap.children) == (
        "failed",
        "start",
        attrs.asdict(Order(order=1, label=how)),
        None,
        (),
    )
    assert snap.error["type"] == "InvalidState"
    assert snap.error["message"] == f"state does not fit Order: {field}"


def test_an_attempt_that_stored_a_wrong_type_is_retried(engine: Engine) -> None:
    iid = _insert(engine, Typed, {"order": 1, "label": "retry"}, max_attempts=2)
    reports = drain(engine, queues=[QUEUE])
    assert [r.decision.kind for r in reports] == ["retry", "next", "done"]
    assert reports[0].decision.error["type"] == "InvalidState"
    assert snapshot(engine, iid).result == {"order": 2, "label": "fixed"}


def test_a_compensation_storing_a_wrong_type_fails_the_instance(engine: Engine) -> None:
    iid = _insert(engine, Typed, {"order": 1, "label": "compensate"}, max_attempts=1)
    drain(engine, queues=[QUEUE])
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.state["order"]) == ("failed", "start", 1)
    assert snap.error["type"] == "RuntimeError"
    assert snap.error["on_error"]["type"] == "InvalidState"
    assert snap.error["on_error"]["message"] == (
        "state does not fit Order: $.order: expected int, got bool"
    )


def test_an_untyped_step_storing_keys_that_are_not_text_fails_that_attempt(engine: Engine) -> None:
    iid = _insert(engine, Untyped, {"how": "int_keys"}, max_attempts=1)
    drain(engine, queues=[QUEUE])
    snap = snapshot(engine, iid)
    assert (snap.status, snap.state, snap.error["type"]) == (
        "failed",
        {"how": "int_keys"},
        "InvalidPayload",
    )


# --- what a step loads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "field"),
    [
        ({"order": "12"}, "$.order: expected int, got str"),
        ({"order": 1.5}, "$.order: expected int, got float"),
        ({"order": 1, "label": 5}, "$.label: expected str, got int"),
    ],
    ids=repr,
)
def test_a_stored_value_of_the_wrong_type_fails_the_attempt_that_loads_it(
    engine: Engine, stored: dict[str, Any], field: str
) -> None:
    iid = _insert(engine, Typed, {"order": 1}, max_attempts=1)
    with engine.begin() as conn:  # as an older version, or a hand-edited row, left it
        conn.execute(
            text("UPDATE gen_durable.gd_instances SET state = CAST(:s AS jsonb) WHERE id = :id"),
            {"s": json.dumps(stored), "id": iid},
        )
    drain(engine, queues=[QUEUE])
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.state) == ("failed", "start", stored)
    assert snap.error["message"] == f"state does not fit Order: {field}"
