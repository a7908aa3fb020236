"""EXPLAIN (ANALYZE, BUFFERS) of the hot statements, exactly as gen_durable sends them.

Each statement is captured from a call of the real storage function: a SQLAlchemy
``before_cursor_execute`` hook lets the function's earlier statements run, stops it at the
statement of interest and hands over its SQL and bound parameters, which are then run
under EXPLAIN in a savepoint that is rolled back. The table holds ``rows`` finished and
``rows`` future-scheduled instances (``sql/seed_big_tables.sql``), a backlog of runnable
jobs, running rows (some with expired leases), awaiting instances and due timers, and has
been vacuumed and analysed.

    python -m benchmarks plans [--dsn ...] [--rows 1000000]
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import store
from gen_durable.domain.decide import Transition
from gen_durable.store import schema as gd_schema

BACKLOG = 10_000
PARKED = 1_000
TIMERS = 200
RUNNING = 500
OWNER = "plans"


class Parked(durable.FSM):
    """Parks on a signal (with a timeout), then finishes."""

    name = "bench.plans.Parked"
    queue = "plans"
    steps = ("wait", "go")

    def step(self, name: str, ctx: durable.Context) -> durable.Await | durable.Done:
        if name == "wait":
            return durable.Await("ping", then="go", timeout=3600)
        return durable.Done()


def updates(table: str) -> Callable[[str], bool]:
    """Matches a statement that UPDATEs ``table`` (possibly after a WITH clause)."""
    pattern = re.compile(rf"\bUPDATE\s+(\S+\.)?{table}\b", re.I)
    return lambda sql: bool(pattern.search(sql))


def touches(*tables: str) -> Callable[[str], bool]:
    """Matches a statement that names one of ``tables``."""
    pattern = re.compile(rf"\b({'|'.join(tables)})\b")
    return lambda sql: bool(pattern.search(sql))


def explained(
    conn: Connection,
    call: Callable[[], object],
    match: Callable[[str], bool],
    analyze: bool = True,
) -> list[tuple[str, str]]:
    """Run ``call``; each statement it sends that ``match`` accepts is first EXPLAINed
    as it is about to run, with its bound parameters (with ANALYZE inside a savepoint that
    is rolled back), then run for real. Returns (statement, plan) of each."""
    options = "ANALYZE, BUFFERS, TIMING OFF, SUMMARY OFF" if analyze else "COSTS OFF"
    found: list[tuple[str, str]] = []

    def hook(
        _conn: Any, cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> tuple[str, Any]:
        if match(statement):
            with cursor.connection.cursor() as cur:
                cur.execute("SAVEPOINT gd_explain")
                cur.execute(f"EXPLAIN ({options}) {statement}", parameters)
                plan = "\n".join(row[0] for row in cur.fetchall())
                cur.execute("ROLLBACK TO SAVEPOINT gd_explain")
                cur.execute("RELEASE SAVEPOINT gd_explain")
            found.append((statement, plan))
        return statement, parameters

    event.listen(conn, "before_cursor_execute", hook, retval=True)
    try:
        call()
    finally:
        event.remove(conn, "before_cursor_execute", hook)
    return found


_BREAK = re.compile(
    r"\s+(?=(FROM|WHERE|SET|RETURNING|ORDER BY|LIMIT|FOR UPDATE|ON CONFLICT|VALUES|"
    r"UPDATE|SELECT|GROUP BY|AND|OR)\b)"
)


def pretty(sql: str, schema: str) -> str:
    """A statement broken into lines before its main clauses, without the schema prefix
    (for reading, not running)."""
    text_ = re.sub(r"\s+", " ", sql).strip().replace(f"{schema}.", "")
    return _BREAK.sub("\n  ", text_)


def short_arrays(plan: str) -> str:
    """Long literal id arrays in a plan as ``'{first,…,last}'``."""
    return re.sub(r"'\{(\d+),[\d,]{40,},(\d+)\}'", r"'{\1,…,\2}'", plan)


# -- the scenario ---------------------------------------------------------------------------


def _claim(conn: Connection, fsm: str, queue: str, limit: int, lease: float = 30) -> list[Any]:
    return store.claims.claim(conn, queue, [fsm], limit, OWNER, lease, None)


def _done(row: Any) -> Transition:
    return Transition(
        instance_id=row.id,
        lease_token=row.lease_token,
        version=row.version,
        kind="done",
        status="done",
        step=row.step,
        state=None,
    )


def _parked(row: Any) -> Transition:
    return attrs.evolve(
        _done(row),
        kind="await",
        status="awaiting",
        step="go",
        delay=3600.0,
        await_names=("ping",),
    )


def prepare(engine: Engine, schema: str, rows: int) -> float:
    """Seed and shape the table; returns the seconds it took."""
    from benchmarks.jobs import Noop

    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        from benchmarks.bigtables import seed_statements

        for statement in seed_statements():
            conn.execute(text(statement), {"done": rows, "scheduled": rows})
    with engine.begin() as conn:  # a consumed signal for each finished row
        conn.execute(
            text(
                f'INSERT INTO "{schema}".gd_signals (instance_id, name, payload, created_at, '
                "consumed_at, consumed_version) SELECT id, 'ping', 'null'::jsonb, "
                f'finished_at, finished_at, 1 FROM "{schema}".gd_instances '
                "WHERE status = 'done' LIMIT :n"
            ),
            {"n": rows},
        )
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Noop.new() for _ in range(BACKLOG)])
        past = datetime.now(UTC) - timedelta(minutes=5)
        durable.insert_all(s, [Noop.new(delay=60) for _ in range(TIMERS)], now=past)
        durable.insert_all(s, [Parked.new(correlation_key=f"parked-{i}") for i in range(PARKED)])
    with engine.begin() as conn:
        parked = _claim(conn, Parked.name, "plans", PARKED)
        store.transitions.commit(conn, [_parked(r) for r in parked], None)
    with engine.begin() as conn:  # running rows: half with leases that expired
        _claim(conn, Noop.name, "default", RUNNING // 2, lease=0.001)
        _claim(conn, Noop.name, "default", RUNNING // 2, lease=600)
    time.sleep(0.01)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'VACUUM ANALYZE "{schema}".gd_instances')
        conn.exec_driver_sql(f'VACUUM ANALYZE "{schema}".gd_signals')
    return time.perf_counter() - started


def _running(conn: Connection, schema: str, limit: int) -> list[tuple[int, Any]]:
    rows = conn.execute(
        text(
            f"SELECT id, lease_token FROM \"{schema}\".gd_instances WHERE status = 'running' "
            "AND lease_expires_at > now() ORDER BY id LIMIT :n"
        ),
        {"n": limit},
    ).all()
    return [(r.id, r.lease_token) for r in rows]


HOT_TABLES = touches("gd_instances", "gd_signals")


def cases(
    schema: str, analyze: bool
) -> list[tuple[str, str, Callable[[Connection], list[tuple[str, str]]]]]:
    """(title, what it is, a function of a connection returning (statement, plan) pairs)."""
    from benchmarks.jobs import Noop

    def plans(conn: Connection, call: Callable[[], object]) -> list[tuple[str, str]]:
        return explained(conn, call, HOT_TABLES, analyze)

    def claim(conn: Connection) -> list[tuple[str, str]]:
        return plans(conn, lambda: _claim(conn, Noop.name, "default", 50))

    def commit(conn: Connection) -> list[tuple[str, str]]:
        rows = _claim(conn, Noop.name, "default", 50)
        return plans(conn, lambda: store.transitions.commit(conn, [_done(r) for r in rows], None))

    def heartbeat(conn: Connection) -> list[tuple[str, str]]:
        held = _running(conn, schema, 50)
        return plans(conn, lambda: store.leases.extend(conn, held, 30, None))

    def timers(conn: Connection) -> list[tuple[str, str]]:
        return plans(conn, lambda: store.maintenance.stage_due(conn, 1000, None))

    def reaper(conn: Connection) -> list[tuple[str, str]]:
        return plans(conn, lambda: store.maintenance.reap(conn, 500, None))

    def signal(conn: Connection) -> list[tuple[str, str]]:
        return plans(conn, lambda: durable.signal(conn, "parked-7", "ping", {"n": 1}))

    def woken(conn: Connection) -> list[tuple[str, str]]:
        durable.signal(conn, "parked-8", "ping", {"n": 1})

        def claim_and_load() -> object:
            rows = _claim(conn, Parked.name, "plans", 50)
            return store.signals.pending_for(conn, [r.id for r in rows])

        return plans(conn, claim_and_load)

    def gc(conn: Connection) -> list[tuple[str, str]]:
        return plans(conn, lambda: store.maintenance.collect_garbage(conn, 7 * 86400, 1000, None))

    return [
        ("Claim", "the dispatcher's claim of up to 50 runnable jobs", claim),
        ("Step commit (grouped)", "the committer's commit of 50 finished steps", commit),
        ("Heartbeat", "lease extension of 50 in-flight steps", heartbeat),
        ("Timers", "the scheduler's staging of due timers", timers),
        ("Reaper", "expired leases returned to their queue", reaper),
        ("Signal", "`signal()` to the live instance of a correlation key", signal),
        ("Claim of a woken instance", "a claim that loads the signals it awaited", woken),
        ("GC", "finished instances past retention (here: none are)", gc),
    ]


def report(url: str, schema: str, rows: int, analyze: bool = True) -> str:
    """Seed a schema, print the plans as Markdown, drop the schema."""
    engine = create_engine(url, pool_size=4)
    durable.configure_schema(schema)
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        ).scalar_one()
    if exists:
        raise SystemExit(f"schema {schema!r} exists: pick another with --schema")
    gd_schema.install(engine, schema)
    out: list[str] = []
    try:
        seconds = prepare(engine, schema, rows)
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar_one()
            counts = conn.execute(
                text(f'SELECT status, count(*) FROM "{schema}".gd_instances GROUP BY 1 ORDER BY 1')
            ).all()
            signals = conn.execute(text(f'SELECT count(*) FROM "{schema}".gd_signals')).scalar()
        out.append(
            f"PostgreSQL {version}; gd_instances: "
            + ", ".join(f"{n:,} {s}" for s, n in counts)
            + f"; gd_signals: {signals:,} (prepared in {seconds:.0f} s)\n"
        )
        with engine.connect() as conn:
            for title, what, case in cases(schema, analyze):
                tx = conn.begin()
                try:
                    found = case(conn)
                finally:
                    tx.rollback()
                count = f"{len(found)} statement{'s' if len(found) != 1 else ''}"
                out.append(f"### {title}\n\n{what[0].upper()}{what[1:]}: {count}.\n")
                for sql, plan in found:
                    out.append("```sql\n" + pretty(sql, schema) + "\n```\n")
                    out.append("```text\n" + short_arrays(plan) + "\n```\n")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    return "\n".join(out)
