"""Bad input to every API entry point: a typed error, no SQL, nothing written.

Each refusal is checked against the database (see ``_support.bad_input.refused``): no
statement was sent, every gd_* table keeps its row count, no sequence moved, the schema
holds the same relations, and the caller's transaction is still usable. Weird but valid
input (SQL-injection strings, non-ASCII, names at their length limit) must come back
exactly as it went in. Outcomes, cron, rate limits and what a step returns at run time
are in test_bad_input_outcomes.py.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator
from typing import Any

import attrs
import pytest
from _support.bad_input import (
    EXAMPLES,
    SMALL_LIMIT,
    Box,
    Echo,
    bad_counts,
    bad_moments,
    bad_names,
    bad_priorities,
    bad_seconds,
    bad_strings,
    census,
    piece,
    refused,
    storable,
    wrong_types,
)
from _support.helpers import snapshot
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done
from gen_durable.client import bulk, dashboard, fleet, upgrades
from gen_durable.domain import serialization as ser
from gen_durable.errors import (
    ConfigurationError,
    InvalidPayload,
    InvalidState,
    PayloadTooLarge,
    UnknownClass,
    ValidationError,
)
from gen_durable.testing import drain


class Typed(FSM):
    name = "bad_input.Typed"
    steps = ("only",)

    @attrs.define
    class State:
        count: int
        tags: list[str] = attrs.Factory(list)

    def only(self, ctx: durable.Context) -> Done:
        return Done(ctx.state.count)


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
at_limit = ["k" * ser.MAX_TEXT_BYTES, "é" * (ser.MAX_TEXT_BYTES // 2), "🎉" * 256]
weird_names = st.sampled_from(INJECTIONS + at_limit) | st.text(storable, min_size=1, max_size=30)
# Signal names also may not hold U+001F: it separates names in one text value.
weird_signal_names = weird_names.map(lambda name: name.replace("\x1f", "_"))


bad_payloads = st.one_of(
    st.builds(lambda a, b: {"note": f"{a}\x00{b}"}, piece, piece),
    st.builds(lambda a: {f"{a}\x00": 1}, piece),
    st.builds(lambda a: [[{"deep": f"{a}\ud800"}]], piece),
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
        piece.map(lambda a: {"name": f"{a}\x1fb"}),
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
@given(now=bad_moments)
def test_every_call_that_takes_now_refuses_one_that_is_not_an_aware_moment(
    engine: Engine, now: Any
) -> None:
    """Regression: a naive ``now=`` was taken in the session's time zone, shifting every
    time written with it, and was accepted silently."""
    iid = _target(engine)
    where = bulk.BulkFilter(class_name=Box.name)
    for call in (
        lambda s: durable.insert(s, Box, now=now),
        lambda s: durable.insert_all(s, [Box.new()], now=now),
        lambda s: durable.signal(s, iid, "go", now=now),
        lambda s: durable.cancel(s, iid, now=now),
        lambda s: durable.retry(s, iid, now=now),
        lambda s: durable.pause_queue(s, "q", now=now),
        lambda s: durable.resume_queue(s, "q", now=now),
        lambda s: durable.set_queue_limit(s, "q", 2, now=now),
        lambda s: durable.explain(s, iid, now=now),
        lambda s: bulk.bulk_preview(s, "cancel", where, now=now),
        lambda s: bulk.bulk_start(s, "cancel", where, bound=iid, expected=1, actor="t", now=now),
        lambda s: bulk.bulk_step(s, 1, now=now),
        lambda s: upgrades.upgrade_batch(s, Box, now=now),
        lambda s: upgrades.move(s, iid, "only", now=now),
        lambda s: fleet.workers(s, now=now),
        lambda s: fleet.queues(s, now=now),
        lambda s: dashboard.overview(s, now=now),
    ):
        error = refused(engine, call, ValidationError)
        assert "now must be a timezone-aware datetime" in str(error)


@EXAMPLES
@given(
    reason=st.one_of(
        st.builds(lambda a: f"{a}\x00", piece),
        st.builds(lambda a: f"\udfff{a}", piece),
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


# --- Runner ------------------------------------------------------------------------------


@EXAMPLES
@given(name=bad_names.filter(lambda v: isinstance(v, Hashable)))  # a dict key
def test_runner_refuses_queue_names_insert_refuses_with_inserts_message(
    engine: Engine, name: Any
) -> None:
    with pytest.raises(ValidationError) as from_insert, Session(engine) as s, s.begin():
        durable.insert(s, Box, queue=name)
    with pytest.raises(ConfigurationError) as from_runner:
        durable.Runner(engine, queues={name: 1})
    assert str(from_runner.value) == str(from_insert.value)


@pytest.mark.parametrize(
    "option",
    ["lease", "heartbeat", "poll_interval", "grace", "gc_interval", "gc_retention", "leader_ttl"],
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=repr)
def test_runner_refuses_an_interval_that_is_not_finite(
    engine: Engine, option: str, value: float
) -> None:
    """Regression: an infinite ``poll_interval`` or ``grace`` was accepted, and the pick
    loop's and scheduler's waits (or ``stop()``) raised OverflowError on first use: a
    Runner that started and then claimed nothing."""
    with pytest.raises(ConfigurationError, match=f"{option} must be a finite number"):
        durable.Runner(engine, queues={"default": 1}, **{option: value})


@pytest.mark.parametrize(
    "call",
    [
        lambda s: durable.insert(s, Box, stat={}),
        lambda s: Box.new(queue="q", prority=1),
        lambda s: durable.signal(s, "k", "go", start=Box.new(correlationkey="k")),
    ],
    ids=["insert", "new", "signal-start"],
)
def test_an_unknown_option_is_a_type_error_and_writes_nothing(engine: Engine, call: Any) -> None:
    """The options are one TypedDict spread as ``**options``: a misspelt one must still be
    refused as Python refuses an unexpected keyword, not ignored."""
    before = census(engine)
    with Session(engine) as s, s.begin(), pytest.raises(TypeError, match="unexpected keyword"):
        call(s)
    assert census(engine) == before
