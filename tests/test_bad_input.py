"""Bad input to every entry point: a typed error, no SQL, nothing written.

Each refusal is checked against the database: no statement was sent, every gd_* table
keeps its row count, no sequence moved, the schema holds the same relations, and the
caller's transaction is still usable. Weird but valid input (SQL-injection strings,
non-ASCII, names at their length limit) must come back exactly as it went in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, literal, select, table, text, union_all
from sqlalchemy.orm import Session
from sqlwatch import StatementCounter
from support import snapshot, wait_status

import gen_durable as durable
from gen_durable import FSM, Await, Cron, Done, Job, Next, RateLimit, Runner, Sleep, Spawn
from gen_durable import serialization as ser
from gen_durable.errors import (
    DefinitionError,
    DurableError,
    InvalidPayload,
    InvalidState,
    PayloadTooLarge,
    UnknownClass,
    ValidationError,
)
from gen_durable.outcomes import Cancel, Fail, RateLimited
from gen_durable.testing import drain

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    # One database per test function; each example measures its own before and after.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMALL_LIMIT = 4096
"""The payload limit while hypothesis runs, so oversized payloads stay cheap to draw."""


class Box(FSM):
    name = "bad_input.Box"
    queue = "bad-input"
    steps = ("start", "finish")

    def start(self, ctx: durable.Context) -> Await:
        return Await(*ctx.state["awaits"], then="finish")

    def finish(self, ctx: durable.Context) -> Done:
        return Done({"state": ctx.state, "payloads": [s.payload for s in ctx.awaited]})


class Typed(FSM):
    name = "bad_input.Typed"
    steps = ("only",)

    @attrs.define
    class State:
        count: int
        tags: list[str] = attrs.Factory(list)

    def only(self, ctx: durable.Context) -> Done:
        return Done(ctx.state.count)


class Echo(Job):
    name = "bad_input.Echo"
    queue = "bad-input"

    def perform(self, args: Any) -> Any:
        return args


BLOB = "GROW" * (ser.DEFAULT_PAYLOAD_LIMIT // 4 + 1)


class Grow(FSM):
    """Returns, at run time, what cannot be stored (chosen by ``state["kind"]``)."""

    name = "bad_input.Grow"
    queue = "bad-input"
    steps = ("start", "end")

    def start(self, ctx: durable.Context) -> Any:
        kind = ctx.state["kind"]
        if kind == "state":
            return Next("end", state={"blob": BLOB})
        if kind == "result":
            return Done({"blob": BLOB})
        if kind == "child":
            return Spawn([Echo.new(args={"blob": BLOB})], then="end")
        if kind == "nul":
            return Done({"text": "a\x00b"})
        raise ValueError(f"bad \x00 byte and a lone \ud800 surrogate in {kind}")

    def end(self, ctx: durable.Context) -> Done:
        return Done()


# --- the census: what "nothing written" means ------------------------------------------


def census(engine: Engine) -> dict[str, object]:
    """Rows of every table, position of every sequence, and every relation of the schema."""
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'gen_durable'")
        ).scalars()
        rows = union_all(
            *(
                select(literal(name).label("name"), func.count().label("n")).select_from(
                    table(name, schema="gen_durable")
                )
                for name in tables
            )
        )
        found: dict[str, object] = {name: n for name, n in conn.execute(rows)}
        found["(sequences)"] = conn.execute(
            text(
                "SELECT array_agg(coalesce(last_value, 0) ORDER BY sequencename) "
                "FROM pg_sequences WHERE schemaname = 'gen_durable'"
            )
        ).scalar_one()
        found["(relations)"] = conn.execute(
            text(
                "SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'gen_durable'"
            )
        ).scalar_one()
        found["(schemas)"] = conn.execute(text("SELECT count(*) FROM pg_namespace")).scalar_one()
    return found


def refused(
    engine: Engine, call: Callable[[Session], object], expected: type[DurableError]
) -> DurableError:
    """Run ``call`` in a transaction: it must raise ``expected`` before any SQL, write
    nothing, and leave the transaction usable."""
    before = census(engine)
    statements = StatementCounter(engine)
    try:
        with Session(engine) as s, s.begin():
            with pytest.raises(expected) as info:
                call(s)
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        statements.close()
    assert statements.counts[("other", "statements")] == 1, "SQL ran before validation"
    assert census(engine) == before
    return info.value


@pytest.fixture
def small_limit() -> Iterator[int]:
    ser.set_payload_limit(SMALL_LIMIT)
    try:
        yield SMALL_LIMIT
    finally:
        ser.set_payload_limit(ser.DEFAULT_PAYLOAD_LIMIT)


# --- strategies ---------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE gen_durable.gd_instances; --",
    '"; DROP SCHEMA gen_durable CASCADE; --',
    "' OR '1'='1",
    "$$; SELECT pg_sleep(10); $$",
    "\\'; TRUNCATE gen_durable.gd_signals; --",
    "%s %(name)s {0} :name $1 ?",
    "x'); SELECT pg_notify('gen_durable_wakeup', 'x'); --",
    "\\x00 \\u0000 \\\\u0000",  # the text of an escape, not a NUL
    "ǅ Ω Ünïcødé 日本語 🎉 \u202eRTL \u001f\u0001",
]
storable = st.characters(codec="utf-8", exclude_characters="\x00")
at_limit = ["k" * ser.MAX_TEXT_BYTES, "é" * (ser.MAX_TEXT_BYTES // 2), "🎉" * 256]
weird_names = st.sampled_from(INJECTIONS + at_limit) | st.text(storable, min_size=1, max_size=30)
# Signal names also may not hold U+001F: it separates names in one text value.
weird_signal_names = weird_names.map(lambda name: name.replace("\x1f", "_"))

_piece = st.text(storable, max_size=5)
bad_strings = st.one_of(
    st.just(""),
    st.builds(lambda a, b: f"{a}\x00{b}", _piece, _piece),
    st.builds(lambda a: f"{a}\ud800", _piece),
    st.integers(ser.MAX_TEXT_BYTES + 1, 4000).map(lambda n: "k" * n),
    st.integers(ser.MAX_TEXT_BYTES // 3 + 1, 2000).map(lambda n: "界" * n),
)
wrong_types = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.binary(min_size=1, max_size=4),
    st.lists(st.text(max_size=3), max_size=2),
)
bad_names = bad_strings | wrong_types
bad_seconds = st.one_of(
    st.floats(max_value=-1e-9),
    st.floats(min_value=ser.MAX_SECONDS * 1.0001),
    st.just(math.nan),
    st.integers(min_value=int(ser.MAX_SECONDS) + 1),
    st.booleans(),
    st.text(max_size=4),
)
bad_counts = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=ser.MAX_INT32 + 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=3),
)
bad_priorities = st.integers().filter(lambda p: not 0 <= p <= 9) | st.floats() | st.booleans()
bad_moments = st.one_of(
    st.datetimes(),  # naive
    st.just(datetime.max.replace(tzinfo=timezone(timedelta(hours=-14)))),
    st.just(datetime.min.replace(tzinfo=timezone(timedelta(hours=14)))),
    st.text(max_size=10),
    st.integers(),
)


bad_payloads = st.one_of(
    st.builds(lambda a, b: {"note": f"{a}\x00{b}"}, _piece, _piece),
    st.builds(lambda a: {f"{a}\x00": 1}, _piece),
    st.builds(lambda a: [[{"deep": f"{a}\ud800"}]], _piece),
    st.sampled_from([math.nan, math.inf, -math.inf]).map(lambda f: {"f": f}),
    st.sampled_from([object(), 1j, {(1, 2): 3}, Session]).map(lambda v: {"v": v}),
    st.integers(SMALL_LIMIT, 3 * SMALL_LIMIT).map(lambda n: {"blob": "x" * n}),
    st.integers(SMALL_LIMIT // 2, SMALL_LIMIT).map(lambda n: ["€" * n]),
)


# --- insert / insert_all -------------------------------------------------------------------


@EXAMPLES
@given(field=st.sampled_from(["correlation_key", "queue", "concurrency_key"]), value=bad_names)
def test_insert_refuses_names_and_keys_a_text_column_cannot_hold(
    engine: Engine, field: str, value: Any
) -> None:
    refused(engine, lambda s: durable.insert(s, Box, **{field: value}), ValidationError)


@EXAMPLES
@given(
    data=st.one_of(
        bad_priorities.map(lambda v: {"priority": v}),
        bad_seconds.map(lambda v: {"delay": v}),
        bad_counts.map(lambda v: {"max_attempts": v}),
        bad_counts.map(lambda v: {"concurrency_key": "c", "concurrency_limit": v}),
        bad_moments.map(lambda v: {"run_at": v}),
        bad_seconds.map(lambda v: {"correlation_key": "k", "dedup_window": v}),
        bad_seconds.map(lambda v: {"correlation_key": "k", "debounce": v}),
        bad_seconds.map(lambda v: {"correlation_key": "k", "debounce": 0, "max_wait": v}),
        st.sampled_from([{"on_conflict": "ignore"}, {"on_conflict": None}, {"debounce": 1}]),
    )
)
def test_insert_refuses_numbers_and_times_out_of_range(
    engine: Engine, data: dict[str, Any]
) -> None:
    refused(engine, lambda s: durable.insert(s, Box, **data), ValidationError)


@EXAMPLES
@given(state=bad_payloads)
def test_insert_refuses_state_jsonb_cannot_hold(
    engine: Engine, small_limit: int, state: Any
) -> None:
    refused(engine, lambda s: durable.insert(s, Box, state=state), InvalidPayload)
    refused(engine, lambda s: durable.insert(s, Echo, args=state), InvalidPayload)


def test_insert_refuses_state_that_does_not_fit_its_attrs_type(engine: Engine) -> None:
    for state in ({"count": "many"}, {"nope": 1}, {}, [1], Typed.State(count="x")):  # type: ignore[arg-type]
        refused(engine, lambda s, v=state: durable.insert(s, Typed, state=v), InvalidState)


def test_insert_refuses_what_is_not_a_bind_or_a_class(engine: Engine) -> None:
    refused(engine, lambda s: durable.insert(object(), Box), ValidationError)  # type: ignore[arg-type]
    for cls in (5, "no.such.Class", "bad\x00name", FSM, dict):
        refused(engine, lambda s, c=cls: durable.insert(s, c), UnknownClass)
    refused(engine, lambda s: durable.insert(s, Box, args={}), ValidationError)
    refused(engine, lambda s: durable.insert(s, Echo, state={}), ValidationError)


@EXAMPLES
@given(bad=st.one_of(bad_payloads, st.just(5), st.just("spec"), st.just(None)))
def test_insert_all_writes_none_of_a_batch_with_one_bad_item(
    engine: Engine, small_limit: int, bad: Any
) -> None:
    def call(s: Session) -> object:
        good = [Box.new(correlation_key=f"batch:{n}") for n in range(3)]
        return durable.insert_all(s, [*good, Box.new(state=bad) if isinstance(bad, dict) else bad])

    refused(engine, call, ValidationError)
    refused(engine, lambda s: durable.insert_all(s, 5), ValidationError)  # type: ignore[arg-type]
    refused(engine, lambda s: durable.insert_all(s, Box.new()), ValidationError)  # type: ignore[arg-type]


# --- signal, cancel, retry, get, queues -----------------------------------------------------


def _target(engine: Engine) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, Box, state={"awaits": ["go"]}, correlation_key="target")


@EXAMPLES
@given(
    data=st.one_of(
        bad_names.filter(lambda v: not isinstance(v, int)).map(lambda v: {"target": v}),
        st.sampled_from([2**63, -(2**63) - 1, 10**30, True]).map(lambda v: {"target": v}),
        bad_names.map(lambda v: {"name": v}),
        _piece.map(lambda a: {"name": f"{a}\x1fb"}),
        bad_payloads.map(lambda v: {"payload": v}),
        bad_names.map(lambda v: {"idempotency_key": v}),
        bad_seconds.map(lambda v: {"dedup_window": v}),
        st.sampled_from([("x",), (Box, {}, 1), 5, "bad_input.Nope"]).map(lambda v: {"start": v}),
    )
)
def test_signal_refuses_bad_targets_names_payloads_and_keys(
    engine: Engine, small_limit: int, data: dict[str, Any]
) -> None:
    _target(engine)
    args = {"target": "target", "name": "go", "payload": None, **data}
    refused(
        engine,
        lambda s: durable.signal(s, args.pop("target"), args.pop("name"), **args),
        ValidationError,
    )


@EXAMPLES
@given(target=bad_strings | st.sampled_from([2**63, 10**40, 1.5, b"k", None, True]))
def test_cancel_retry_get_and_queues_refuse_bad_targets(engine: Engine, target: Any) -> None:
    for call in (durable.cancel, durable.retry, durable.get, durable.pause_queue):
        refused(engine, lambda s, f=call: f(s, target), ValidationError)  # type: ignore[misc]
    refused(engine, lambda s: durable.resume_queue(s, target), ValidationError)
    refused(engine, lambda s: durable.set_queue_limit(s, target, 1), ValidationError)


@EXAMPLES
@given(actor=bad_names, limit=bad_counts)
def test_operator_actions_refuse_bad_actors_and_limits(
    engine: Engine, actor: Any, limit: Any
) -> None:
    iid = _target(engine)
    for call in (
        lambda s: durable.cancel(s, iid, actor=actor),
        lambda s: durable.retry(s, iid, actor=actor),
        lambda s: durable.signal(s, iid, "go", actor=actor),
        lambda s: durable.pause_queue(s, "q", actor=actor),
        lambda s: durable.resume_queue(s, "q", actor=actor),
        lambda s: durable.set_queue_limit(s, "q", 2, actor=actor),
        lambda s: durable.set_queue_limit(s, "q", limit),
    ):
        refused(engine, call, ValidationError)


@EXAMPLES
@given(
    reason=st.one_of(
        st.builds(lambda a: f"{a}\x00", _piece),
        st.builds(lambda a: f"\udfff{a}", _piece),
        st.integers(SMALL_LIMIT, 2 * SMALL_LIMIT).map(lambda n: "r" * n),
        wrong_types,
    )
)
def test_cancel_refuses_a_reason_jsonb_cannot_hold(
    engine: Engine, small_limit: int, reason: Any
) -> None:
    iid = _target(engine)
    refused(engine, lambda s: durable.cancel(s, iid, reason), ValidationError)
    assert not snapshot(engine, iid).finished


def test_payload_over_the_default_limit_is_refused_before_anything_is_written(
    engine: Engine,
) -> None:
    iid = _target(engine)
    limit = ser.payload_limit()
    assert limit == ser.DEFAULT_PAYLOAD_LIMIT == 1 << 20
    over = {"blob": "x" * limit}
    error = refused(engine, lambda s: durable.signal(s, iid, "go", over), PayloadTooLarge)
    assert isinstance(error, PayloadTooLarge) and (error.size, error.limit) == (limit + 11, limit)
    assert "xxxx" not in str(error)  # the message names the size, never the value
    refused(engine, lambda s: durable.insert(s, Box, state=over), PayloadTooLarge)
    refused(engine, lambda s: durable.insert(s, Echo, args=over), PayloadTooLarge)


def test_the_payload_limit_counts_utf8_bytes_up_to_and_including_it(
    engine: Engine, small_limit: int
) -> None:
    # {"s":"…"} is 8 bytes of JSON around the text; "é" is 2 bytes of UTF-8.
    fits = {"s": "é" * ((small_limit - 8) // 2)}
    assert len(ser.dumps(fits).encode()) == small_limit
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Echo, args=fits)
        assert durable.get(s, iid).state == fits
    over = {"s": "é" * ((small_limit - 8) // 2) + "!"}
    refused(engine, lambda s: durable.insert(s, Echo, args=over), PayloadTooLarge)
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ValidationError):
            ser.set_payload_limit(bad)  # type: ignore[arg-type]
    assert ser.payload_limit() == small_limit


# --- outcome, cron and rate-limit constructors (no database) --------------------------------


@settings(max_examples=150, deadline=None)
@given(
    build=st.one_of(
        bad_names.map(lambda v: lambda: Await(v, then="x")),
        _piece.map(lambda a: lambda: Await(f"{a}\x1f", then="x")),
        bad_names.map(lambda v: lambda: Await("s", then=v)),
        bad_names.map(lambda v: lambda: Await("s", then="x", timeout=1, on_timeout=v)),
        bad_counts.map(lambda v: lambda: Await("s", then="x", limit=v)),
        bad_seconds.map(lambda v: lambda: Await("s", then="x", timeout=v)),
        bad_seconds.map(lambda v: lambda: Sleep(v, then="x")),
        bad_moments.map(lambda v: lambda: Sleep(until=v, then="x")),
        bad_names.map(lambda v: lambda: Sleep(1, then=v)),
        bad_names.map(lambda v: lambda: Next(v)),
        bad_seconds.map(lambda v: lambda: Next("x", delay=v)),
        bad_moments.map(lambda v: lambda: Next("x", run_at=v)),
        bad_seconds.map(lambda v: lambda: RateLimited(v)),
        wrong_types.map(lambda v: lambda: Fail(v)),
        wrong_types.map(lambda v: lambda: Cancel(v)),
        bad_names.map(lambda v: lambda: Spawn([Echo.new()], then=v)),
        st.sampled_from([[], 5, "x", [1], Echo.new()]).map(lambda v: lambda: Spawn(v, then="x")),
        st.just(lambda: Spawn([Echo.new()], then="x", on_failure="never")),
        st.just(lambda: Await(then="x")),
    )
)
def test_outcome_constructors_refuse_what_the_engine_could_not_store(
    build: Callable[[], object],
) -> None:
    with pytest.raises(ValidationError):
        build()


@settings(max_examples=100, deadline=None)
@given(
    kwargs=st.one_of(
        st.sampled_from(
            ["", "* * *", "61 * * * *", "* * * * * * *", "@never", "* * * * *\x00"]
        ).map(lambda e: {"expression": e}),
        wrong_types.map(lambda e: {"expression": e}),
        st.sampled_from(["Mars/Olympus", "../../etc/passwd", "/etc/localtime", "UTC\x00", ""]).map(
            lambda z: {"timezone": z}
        ),
        st.integers(300, 5000).map(lambda n: {"timezone": "a" * n}),
        wrong_types.map(lambda z: {"timezone": z}),
        bad_names.map(lambda n: {"name": n}),
        st.integers(ser.MAX_TEXT_BYTES, 3000).map(
            lambda n: {"expression": "*" + " " * n + "* * * *"}
        ),
        st.sampled_from(["never", None, 1]).map(lambda c: {"catch_up": c}),
        bad_seconds.map(lambda g: {"grace": g}),
        bad_priorities.map(lambda p: {"priority": p}),
        bad_names.map(lambda q: {"queue": q}),
        st.just({"cls": "bad_input.Nope"}),
    )
)
def test_cron_refuses_bad_expressions_time_zones_and_names(kwargs: dict[str, Any]) -> None:
    args = {"expression": "*/5 * * * *", "cls": Box, **kwargs}
    with pytest.raises(ValidationError):
        Cron(args.pop("expression"), args.pop("cls"), **args)


@settings(max_examples=100, deadline=None)
@given(
    kwargs=st.one_of(
        st.one_of(
            st.floats(max_value=0), st.just(math.inf), st.just(math.nan), st.text(max_size=2)
        ).map(lambda r: {"rate": r}),
        st.one_of(st.floats(max_value=0), st.booleans()).map(lambda p: {"per": p}),
        st.just({"rate": 1e308, "per": 1e-308}),
        st.just({"rate": 1e-308, "per": 1e308}),
        st.one_of(st.floats(max_value=0), st.just(math.inf)).map(lambda b: {"burst": b}),
        st.sampled_from([5, "x"]).map(lambda f: {"partition": f}),
        st.sampled_from([5, "x"]).map(lambda f: {"weight": f}),
    )
)
def test_rate_limit_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    args = {"rate": 10, **kwargs}
    with pytest.raises(DefinitionError):
        RateLimit(args.pop("rate"), **args)


def test_a_rate_limit_partition_must_give_a_storable_bucket_key(engine: Engine) -> None:
    class Partitioned(FSM):
        name = "bad_input.Partitioned"
        steps = ("start",)
        rate_limit = RateLimit(10, partition=lambda state: state["tenant"])

        def start(self, ctx: durable.Context) -> Done:
            return Done()

    for tenant in ("a\x00b", "t" * 2000):
        refused(
            engine,
            lambda s, t=tenant: durable.insert(s, Partitioned, state={"tenant": t}),
            ValidationError,
        )


# --- weird but valid: exact round trips ------------------------------------------------------

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    # jsonb keeps numbers as numeric: a float beyond 1e15 may come back as an int.
    | st.floats(-1e15, 1e15)
    | weird_names
    | st.text(storable, max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(weird_names, inner, max_size=3),
    max_leaves=8,
)


@EXAMPLES
@given(
    key=weird_names,
    queue=weird_names,
    concurrency_key=weird_names,
    signal=weird_signal_names,
    idempotency_key=weird_names,
    state=st.dictionaries(weird_names, payloads, max_size=3),
    payload=payloads,
)
def test_weird_but_valid_input_round_trips_exactly(
    engine: Engine,
    key: str,
    queue: str,
    concurrency_key: str,
    signal: str,
    idempotency_key: str,
    state: dict[str, Any],
    payload: Any,
) -> None:
    state = {**state, "awaits": [signal]}
    with Session(engine) as s:
        iid = durable.insert(
            s, Box, state=state, correlation_key=key, queue=queue, concurrency_key=concurrency_key
        )
        sent = durable.signal(s, key, signal, payload, idempotency_key=idempotency_key)
        again = durable.signal(s, key, signal, payload, idempotency_key=idempotency_key)
        snap = durable.get(s, key)  # read back from PostgreSQL, in the same transaction
        s.rollback()  # each example leaves the database as it found it
    assert (snap.id, sent.instance_id, again.duplicate) == (iid, iid, True)
    assert (snap.correlation_key, snap.queue, snap.state) == (key, queue, state)
    assert [(x.name, x.payload, x.idempotency_key) for x in snap.signals] == [
        (signal, payload, idempotency_key)
    ]


def test_weird_but_valid_input_round_trips_through_the_runtime(engine: Engine) -> None:
    names = [*INJECTIONS[:7], *at_limit]
    names = [n.replace("\x1f", "_") for n in names]
    with Session(engine) as s, s.begin():
        ids = [
            durable.insert(s, Box, state={"awaits": [n], n: n}, correlation_key=n) for n in names
        ]
        for n in names:
            durable.signal(s, n, n, {n: [n, "é" * 3]})
    drain(engine)
    for iid, n in zip(ids, names, strict=True):
        snap = snapshot(engine, iid)
        assert snap.status == "done", snap.error
        assert snap.result == {"state": {"awaits": [n], n: n}, "payloads": [{n: [n, "ééé"]}]}


# --- what a step returns at run time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("state", "PayloadTooLarge"),
        ("result", "PayloadTooLarge"),
        ("child", "PayloadTooLarge"),
        ("nul", "InvalidPayload"),
    ],
)
def test_a_step_returning_what_cannot_be_stored_fails_its_attempt(
    engine: Engine, kind: str, error: str
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Grow, state={"kind": kind}, max_attempts=1)
    drain(engine)
    snap = snapshot(engine, iid)
    assert (snap.status, snap.step, snap.state, snap.result) == (
        "failed",
        "start",
        {"kind": kind},
        None,
    )
    assert snap.error["type"] == error
    assert "GROWGROW" not in json.dumps(snap.error)
    assert snap.children == ()


def test_an_error_message_jsonb_cannot_hold_is_recorded_and_the_runner_carries_on(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        bad = durable.insert(s, Grow, state={"kind": "raise"}, max_attempts=1)
        good = durable.insert(s, Echo, args={"ok": True})
    with Runner(engine, queues={"bad-input": 2}, lease=5.0, poll_interval=0.1, grace=2.0):
        failed = wait_status(engine, bad, "failed")
        assert wait_status(engine, good, "done").result == {"ok": True}
    assert failed.error["message"] == "bad \ufffd byte and a lone \ufffd surrogate in raise"
