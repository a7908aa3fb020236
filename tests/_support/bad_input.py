"""Values, classes and the refusal check shared by the bad-input tests (test_bad_input*.py).

:func:`refused` checks a refusal against the database: no statement was sent, every gd_*
table keeps its row count, no sequence moved, the schema holds the same relations, and the
caller's transaction is still usable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, literal, select, table, text, union_all
from sqlalchemy.orm import Session

import gen_durable as durable
from _support.sqlwatch import StatementCounter
from gen_durable import FSM, Await, Done, Job
from gen_durable.domain import serialization as ser
from gen_durable.errors import DurableError

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


class Echo(Job):
    name = "bad_input.Echo"
    queue = "bad-input"

    def perform(self, args: Any) -> Any:
        return args


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


# --- strategies ---------------------------------------------------------------------------

storable = st.characters(codec="utf-8", exclude_characters="\x00")
piece = st.text(storable, max_size=5)
bad_strings = st.one_of(
    st.just(""),
    st.builds(lambda a, b: f"{a}\x00{b}", piece, piece),
    st.builds(lambda a: f"{a}\ud800", piece),
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
