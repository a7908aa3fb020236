"""Bad values in outcomes, cron schedules and rate limits, and in what a step returns.

The constructors refuse with a typed error (no database); a step that returns what
cannot be stored fails its attempt, and nothing of it is written. Bad input to the API
entry points is in test_bad_input.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from _support.bad_input import (
    Box,
    Echo,
    bad_counts,
    bad_moments,
    bad_names,
    bad_priorities,
    bad_seconds,
    piece,
    refused,
    wrong_types,
)
from _support.helpers import snapshot, wait_status
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Cron, Done, Next, RateLimit, Runner, Sleep, Spawn
from gen_durable.domain import serialization as ser
from gen_durable.domain.outcomes import Cancel, Fail, RateLimited
from gen_durable.errors import DefinitionError, ValidationError
from gen_durable.testing import drain

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


# --- outcome, cron and rate-limit constructors (no database) --------------------------------


@settings(max_examples=150, deadline=None)
@given(
    build=st.one_of(
        bad_names.map(lambda v: lambda: Await(v, then="x")),
        piece.map(lambda a: lambda: Await(f"{a}\x1f", then="x")),
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
