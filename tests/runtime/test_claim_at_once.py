"""The claim at once: a pick loop's claim as one statement, committed as it completes.

It leases only rows no admission applies to; rows under a concurrency key or a rate
limit, and every row of a queue with a global concurrency limit, go through the claim in
a transaction. Checked against that claim on the same batch, on the database's own view
of the rows, with mixed batches; and its edges: a failure after the rows were leased, the
session settings it needs, connections that prepare no statements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, RateLimit, faults, store
from gen_durable.runtime import claiming
from gen_durable.runtime.held import HeldConnection

SESSION = (store.claims.begin_claim_session, store.claims.end_claim_session)


class Free(Job):
    name = "once.Free"

    def perform(self, args: Any) -> None:
        return None


class Keyed(Job):
    name = "once.Keyed"

    @attrs.define
    class Args:
        key: int

    @staticmethod
    def concurrency_key(args: Any) -> str:
        return f"k{args.key}"

    def perform(self, args: Any) -> None:
        return None


class Limited(Job):
    name = "once.Limited"
    rate_limit = RateLimit(3, per=3600, burst=3)

    def perform(self, args: Any) -> None:
        return None


CLASSES = [Free.name, Keyed.name, Limited.name]


def _request(limit: int) -> store.claims.ClaimRequest:
    return store.claims.ClaimRequest("default", [Free.name], limit, "r", 30)


def _mixed_batch(engine: Engine) -> None:
    """Free rows around keyed and rate-limited ones, at two priorities."""
    specs: list[durable.InsertSpec] = []
    for n in range(6):
        priority = n % 2
        specs.append(Free.new(priority=priority))
        specs.append(Keyed.new(args={"key": n % 2}, priority=priority))
        specs.append(Limited.new(priority=priority))
    with Session(engine) as s, s.begin():
        durable.insert_all(s, specs)


def _view(engine: Engine) -> dict[int, tuple[str, int]]:
    """Every row's (status, attempt), as the database sees it."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, attempt FROM gen_durable.gd_instances"))
        return {r.id: (r.status, r.attempt) for r in rows}


def _statements(engine: Engine) -> tuple[list[str], Callable[[], None]]:
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    return seen, lambda: event.remove(engine, "before_cursor_execute", count)


def test_a_claim_at_once_over_a_mixed_batch_leases_what_the_claim_in_a_transaction_does(
    two_engines: tuple[Engine, Engine],
) -> None:
    """Free, keyed and rate-limited rows at two priorities, claimed by the pick loop's
    claims in one database and by the claim in a transaction in an identical one: the
    same rows leased, in the same order, and the same rows blocked or deferred."""
    in_transaction, at_once = two_engines
    for engine in two_engines:
        _mixed_batch(engine)
    by_transaction = claiming.claim(in_transaction, "default", CLASSES, 12, "r", 30)
    held = HeldConnection(at_once, session=SESSION)
    try:
        claims = claiming.Claims(held, "default", "r", 30)
        with held.begin():  # connected, its session set up
            pass
        seen, stop = _statements(at_once)
        by_claims = claims(CLASSES, 12)
        first = list(seen)
        seen.clear()
        claims(CLASSES, 12)  # for a while, the claims go straight to a transaction
        stop()
    finally:
        held.close()

    assert [c.id for c in by_claims] == [c.id for c in by_transaction]
    fsms = {c.fsm for c in by_claims}
    assert fsms == set(CLASSES)  # each kind took part
    # the at-once statement first (it found keyed rows), then the claim in a transaction
    assert "set_config" not in first[0] and "set_config" in first[1]
    assert "set_config" in seen[0]
    claiming.claim(in_transaction, "default", CLASSES, 12, "r", 30)
    assert _view(at_once) == _view(in_transaction)


def test_free_rows_are_claimed_in_one_statement_with_no_transaction_of_their_own(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Free.new() for _ in range(5)])
    held = HeldConnection(engine, session=SESSION)
    try:
        with held.begin():
            pass
        seen, stop = _statements(engine)
        with held.begin() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            found = store.claims.claim_at_once(conn, _request(10))
            # committed as it completed: no transaction left open on the server
            assert driver.info.transaction_status.name == "IDLE"
        stop()
    finally:
        held.close()
    assert found is not None
    rows, admitting = found
    assert [r.id for r in rows] == ids and not admitting
    assert len(seen) == 1
    assert set(_view(engine).values()) == {("running", 1)}


def test_a_queue_with_a_global_limit_is_claimed_in_a_transaction(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Free.new() for _ in range(5)])
        durable.set_queue_limit(s, "default", 2)
    held = HeldConnection(engine, session=SESSION)
    try:
        with held.begin() as conn:
            found = store.claims.claim_at_once(conn, _request(10))
        assert found is not None and found[0] == [] and found[1]  # nothing leased at once
        claimed = claiming.Claims(held, "default", "r", 30)([Free.name], 10)
    finally:
        held.close()
    assert len(claimed) == 2
    assert sorted(v[0] for v in _view(engine).values()) == ["available"] * 3 + ["running"] * 2


def test_rows_leased_at_once_are_given_back_when_the_rest_of_the_claim_fails(
    engine: Engine,
) -> None:
    """Without it they would stay leased, unstarted, until the reaper found their leases
    expired."""
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Free.new() for _ in range(3)])
    held = HeldConnection(engine, session=SESSION)
    rule = faults.Rule("claim", "raise", count=1, error=TimeoutError("after the lease"))
    try:
        with faults.inject(rule), pytest.raises(TimeoutError):
            claiming.claim(held, "default", [Free.name], 10, "r", 30, at_once=True)
        assert set(_view(engine).values()) == {("available", 0)}
        assert len(claiming.claim(held, "default", [Free.name], 10, "r", 30, at_once=True)) == 3
    finally:
        held.close()


def _settings(conn: Connection) -> tuple[str, str]:
    row = conn.execute(
        text("SELECT current_setting('synchronous_commit'), current_setting('plan_cache_mode')")
    ).one()
    return row[0], row[1]


def test_the_claim_session_is_undone_before_its_connection_goes_back_to_the_pool(
    db_url: str,
) -> None:
    """The values the session replaced come back, including one the application set on
    its connections (a connect event here)."""
    engine = create_engine(db_url, pool_size=1, max_overflow=0)

    @event.listens_for(engine, "connect")
    def custom_plans(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("SET plan_cache_mode = force_custom_plan")
        dbapi_conn.commit()

    try:
        with engine.connect() as conn:
            assert _settings(conn) == ("on", "force_custom_plan")
        held = HeldConnection(engine, session=SESSION)
        with held.begin() as conn:
            assert _settings(conn) == ("off", "force_generic_plan")
        held.close()
        with engine.connect() as conn:  # the pool's one connection, the held one
            assert _settings(conn) == ("on", "force_custom_plan")
            assert not conn.info.get("gen_durable.claim_session")
    finally:
        engine.dispose()


def test_no_claim_session_on_connections_that_prepare_no_statements(db_url: str) -> None:
    """Behind PgBouncer in transaction pooling a session setting would reach other
    clients' transactions: such connections claim in a transaction."""
    engine = create_engine(db_url, connect_args={"prepare_threshold": None})
    try:
        with Session(engine) as s, s.begin():
            durable.insert_all(s, [Free.new() for _ in range(2)])
        held = HeldConnection(engine, session=SESSION)
        try:
            with held.begin() as conn:
                assert _settings(conn) == ("on", "auto")
                assert store.claims.claim_at_once(conn, _request(5)) is None
            assert len(claiming.Claims(held, "default", "r", 30)([Free.name], 5)) == 2
        finally:
            held.close()
    finally:
        engine.dispose()


def test_a_claim_session_whose_backend_was_terminated_fails_with_why_then_reconnects(
    engine: Engine,
) -> None:
    """Regression: the statement's error was hidden by the "connection is closed" of
    resetting the driver's autocommit on the dead connection."""
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Free.new() for _ in range(2)])
    held = HeldConnection(engine, session=SESSION)
    claims = claiming.Claims(held, "default", "r", 30)
    try:
        with held.begin() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.begin() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as failed:
            claims([Free.name], 5)
        assert "connection is closed" not in str(failed.value)
        assert len(claims([Free.name], 5)) == 2  # a new connection, a new claim session
    finally:
        held.close()
