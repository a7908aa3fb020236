"""Regression guards: the hot statements use their indexes (EXPLAIN, never timings).

One database holds 50,000 finished and 50,000 far-future scheduled instances, a backlog
of runnable jobs, running rows (half with expired leases) and due timers, and has been
analysed. Each statement is captured from a call of the real storage function, with its
bound parameters, and EXPLAINed just before it runs; on PostgreSQL 16 and later the
plan a prepared statement settles on after six executions (it may switch to a generic
plan) is checked too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _support.dbutil import DatabaseFactory
from _support.helpers import transition_for
from _support.sqlwatch import explain_each, indexes, nodes, rows_read, seq_scans
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, store
from gen_durable.domain.decide import Transition
from gen_durable.store import _fast

FINISHED = 50_000
SCHEDULED = 50_000
BACKLOG = 10_000
TIMERS = 2_000
RUNNING = 100
TABLE = "gd_instances"


class PlanJob(Job):
    name = "plans.Job"

    def perform(self, args: Any) -> None:
        return None


SEED = [
    f"""INSERT INTO gen_durable.gd_instances (fsm, queue, status, step, max_attempts,
        correlation_key, result, finished_at, updated_at)
    SELECT 'plans.Seed', 'default', 'done', 'perform', 10, 'done-' || g, 'null'::jsonb,
        now() - g * interval '1 second', now() - g * interval '1 second'
    FROM generate_series(1, {FINISHED}) AS g""",
    f"""INSERT INTO gen_durable.gd_instances (fsm, queue, status, step, max_attempts,
        run_at, correlation_key)
    SELECT 'plans.Seed', 'default', 'scheduled', 'perform', 10,
        now() + interval '30 days' + g * interval '1 second', 'future-' || g
    FROM generate_series(1, {SCHEDULED}) AS g""",
]


def _claim(conn: Connection, limit: int, lease: float = 30.0) -> list[Any]:
    return store.claims.claim(conn, "default", [PlanJob.name], limit, "plans", lease, None)


@pytest.fixture(scope="module")
def big(db_factory: DatabaseFactory) -> Iterator[Engine]:
    """A database whose instances table looks like a busy one (see the module docstring)."""
    name = db_factory.new_name()
    eng = create_engine(db_factory.create(name, template=db_factory.template), pool_size=2)
    try:
        with eng.begin() as conn:
            for sql in SEED:
                conn.execute(text(sql))
        with Session(eng) as s, s.begin():
            durable.insert_all(s, [PlanJob.new() for _ in range(BACKLOG)])
            past = datetime.now(UTC) - timedelta(minutes=5)
            durable.insert_all(s, [PlanJob.new(delay=60) for _ in range(TIMERS)], now=past)
        with eng.begin() as conn:
            _claim(conn, RUNNING // 2, lease=0.001)  # expired by the time the reaper looks
            _claim(conn, RUNNING // 2, lease=600)
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE gen_durable.gd_instances")
        yield eng
    finally:
        eng.dispose()
        db_factory.drop(name)


def _touches_instances(sql: str) -> bool:
    return bool(re.search(rf"\b{TABLE}\b", sql)) and "set_config" not in sql


def _running(conn: Connection) -> list[tuple[int, Any]]:
    rows = conn.execute(
        text(
            "SELECT id, lease_token FROM gen_durable.gd_instances "
            "WHERE status = 'running' AND lease_expires_at > now() ORDER BY id LIMIT 50"
        )
    ).all()
    return [(r.id, r.lease_token) for r in rows]


def _done(row: Any) -> Transition:
    return transition_for(row)


Case = Callable[[Connection], Callable[[], object]]


def claim_case(conn: Connection) -> Callable[[], object]:
    return lambda: _claim(conn, 50)


def claim_at_once_case(conn: Connection) -> Callable[[], object]:
    # claim_at_once's statement, in this test's transaction (run at once, it would commit)
    params = store.claims.ClaimRequest("default", [PlanJob.name], 50, "plans", 30.0).params()
    return lambda: _fast.execute(conn, store.claims._CLAIM_AT_ONCE, params)


def commit_case(conn: Connection) -> Callable[[], object]:
    rows = _claim(conn, 50)
    return lambda: store.transitions.commit(conn, [_done(r) for r in rows], None)


def session_commit_case(conn: Connection) -> Callable[[], object]:
    # a step that wrote through ctx.session: one transition, with the generic plan
    row = _claim(conn, 1)[0]
    return lambda: store.transitions.commit(conn, [_done(row)], None, generic_plan=True)


def heartbeat_case(conn: Connection) -> Callable[[], object]:
    held = _running(conn)
    assert held
    return lambda: store.leases.extend(conn, held, 30, None)


def timers_case(conn: Connection) -> Callable[[], object]:
    return lambda: store.maintenance.stage_due(conn, 1000, None)


def reaper_case(conn: Connection) -> Callable[[], object]:
    return lambda: store.maintenance.reap(conn, 500, None)


# (case, indexes the statements must use between them, a known problem that makes the case
# xfail while it shows — the problem is described in docs/performance.md)
CASES: dict[str, tuple[Case, set[str], str | None]] = {
    "claim": (claim_case, {"ix_gd_instances_pick"}, None),
    "claim_at_once": (claim_at_once_case, {"ix_gd_instances_pick"}, None),
    "commit": (commit_case, {"pk_gd_instances"}, None),
    "session_commit": (session_commit_case, {"pk_gd_instances"}, None),
    "heartbeat": (heartbeat_case, {"pk_gd_instances"}, None),
    "timers": (timers_case, {"ix_gd_instances_due"}, None),
    "reaper": (reaper_case, {"ix_gd_instances_running"}, None),
}


def _check(found: list[tuple[str, dict[str, Any]]], wanted: set[str], known: str | None) -> None:
    assert found, "the call sent no statement on gd_instances"
    used = set().union(*(indexes(plan) for _, plan in found))
    assert wanted <= used, f"expected indexes {sorted(wanted)}, the plans use {sorted(used)}"
    seq = [sql[:120] for sql, plan in found if seq_scans(plan, TABLE)]
    if seq and known is not None:
        pytest.xfail(f"known: {known}")
    assert not seq, f"Seq Scan on {TABLE} in: {seq}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_hot_statement_uses_its_index(big: Engine, name: str) -> None:
    case, wanted, known = CASES[name]
    with big.connect() as conn, conn.begin() as tx:
        call = case(conn)
        found = explain_each(conn, call, _touches_instances)
        tx.rollback()
    _check(found, wanted, known)


def test_claim_reads_the_rows_it_claims_not_the_backlog(big: Engine) -> None:
    """The claim walks the picker's index in order and stops at its LIMIT: the rows it
    reads do not grow with the backlog (here 10,000 runnable rows, a claim of 50)."""
    with big.connect() as conn, conn.begin() as tx:
        found = explain_each(conn, claim_case(conn), _touches_instances, analyze=True)
        tx.rollback()
    read = sum(rows_read(plan, TABLE) for _, plan in found)
    assert found and read <= 4 * 50, (
        f"the claim of 50 read {read} rows of {TABLE} (a backlog of {BACKLOG}): "
        + "; ".join(sql[:100] for sql, _ in found)
    )


def test_grouped_commit_reads_its_own_rows_not_every_running_one(big: Engine) -> None:
    """The commit of 50 steps reads those 50 rows (once to lock them in id order, once to
    update them), however many other instances are running (here 100 more)."""
    with big.connect() as conn, conn.begin() as tx:
        found = explain_each(conn, commit_case(conn), _touches_instances, analyze=True)
        running = conn.execute(
            text("SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'running'")
        ).scalar_one()
        tx.rollback()
    read = sum(rows_read(plan, TABLE) for _, plan in found)
    assert running >= 2 * 50  # after the commit: the others
    assert found and read <= 2 * 50, f"the commit of 50 read {read} rows of {TABLE}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepared_hot_statement_keeps_using_its_index(big: Engine, name: str) -> None:
    case, wanted, known = CASES[name]
    with big.connect() as conn, conn.begin() as tx:
        call = case(conn)
        found = explain_each(conn, call, _touches_instances, prepared=True)
        tx.rollback()
    _check(found, wanted, known)


@pytest.fixture(scope="module")
def backlog_only(db_factory: DatabaseFactory) -> Iterator[Engine]:
    """A database whose instances table holds nothing but a backlog of runnable jobs."""
    name = db_factory.new_name()
    eng = create_engine(db_factory.create(name, template=db_factory.template), pool_size=2)
    try:
        with Session(eng) as s, s.begin():
            durable.insert_all(s, [PlanJob.new() for _ in range(10 * BACKLOG)])
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE gen_durable.gd_instances")
        yield eng
    finally:
        eng.dispose()
        db_factory.drop(name)


@pytest.mark.parametrize("case", [claim_case, claim_at_once_case], ids=["claim", "at_once"])
def test_prepared_claim_walks_the_picker_when_the_table_is_all_backlog(
    backlog_only: Engine, case: Case
) -> None:
    """Regression: the claim's generic plan had its own constants as parameters
    (``status = $2``), so it could not use the picker's partial index, and estimated its
    LIMIT at a tenth of the table; with nothing but runnable rows in the table it read and
    sorted the whole backlog on every claim (11 ms a claim at 100,000 rows, against
    1.3 ms). The statement's constants and its LIMIT are now literals of its text."""
    with backlog_only.connect() as conn, conn.begin() as tx:
        # The plan a prepared statement may settle on: the generic one.
        conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        found = explain_each(conn, case(conn), _touches_instances, prepared=True)
        tx.rollback()
    _check(found, {"ix_gd_instances_pick"}, None)
    assert not any("Sort" in {n["Node Type"] for n in nodes(plan)} for _, plan in found)
