"""What every workload shares: the bench (server, schema, engines) and its figures.

A workload gets a :class:`Bench` and reports :class:`Figure` records through it. Rates are
medians of repeated runs; each run is measured by a ``Meter`` (:mod:`benchmarks.measure`),
and rates are compared with the pgbench reference of the same run
(:mod:`benchmarks.calibration`). :func:`drain_runs` times a Runner (in a child process,
:mod:`benchmarks.proc`) working off instances inserted beforehand (:func:`insert_specs`,
:func:`top_up`, :func:`clear`); the Runner's CPU and the server's (:mod:`benchmarks.cpu`)
are measured over the same run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, text

import gen_durable as durable
from benchmarks import cpu
from benchmarks.calibration import Calibration
from benchmarks.connection import with_app_name
from benchmarks.measure import Measured, Meter, ServerStats, SqlCounter, read_wal_syncs
from benchmarks.output import emit, log, rounded
from gen_durable.store import schema as gd_schema

SERVICE_CONNECTIONS = 6
"""Connections a Runner's own threads may hold (committer, heartbeat, timers, ...)."""


# -- the bench -------------------------------------------------------------------------------


@dataclass
class Figure:
    """One reported figure: a JSON line, and a row of the final table."""

    workload: str
    name: str
    value: float | None
    unit: str
    clients: int | None = None
    tps_ref: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def e(self) -> float | None:
        if self.value is None or not self.tps_ref or self.unit not in ("steps/s", "rows/s"):
            return None
        return self.value / self.tps_ref

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "figure",
            "workload": self.workload,
            "name": self.name,
            "value": rounded(self.value, 3),
            "unit": self.unit,
        }
        if self.clients is not None:
            out["clients"] = self.clients
        if self.tps_ref is not None:
            out["tps_ref"] = round(self.tps_ref, 1)
            out["E"] = rounded(self.e)
        out.update(self.extra)
        return out


@dataclass
class Options:
    quick: bool
    repeat: int
    pgbench_seconds: float
    window: float
    """Seconds a throughput run lasts at most (it ends earlier once its backlog is gone)."""
    steps: int = 20_000
    """Steps of a counted run (W1 at concurrency 10, W2, W1P, W6, W8): drained to the end."""
    pickup_seconds: float = 20.0
    """How long W10 inserts for, per run."""

    @property
    def few(self) -> int:
        """Runs of the slowest workloads (W1P, W10): one in the quick tier, else ``repeat``."""
        return 1 if self.quick else self.repeat

    @property
    def counted_window(self) -> float:
        """The safety limit of a counted run (it ends when its backlog is gone)."""
        return max(self.window, 600.0)


class Bench:
    """The run's database handles, schema and calibration; one per CLI invocation."""

    def __init__(self, url: str, schema: str, options: Options, pgbench: str | None) -> None:
        self.url = url
        self.schema = schema
        self.ref_schema = f"{schema}_ref"
        self.options = options
        self.admin = create_engine(with_app_name(url, "gd-bench-admin"), pool_size=4)
        self.calibration = Calibration(self, pgbench, options.pgbench_seconds)
        self.figures: list[Figure] = []
        self.results: dict[str, Figure] = {}
        """Figures other workloads compare with (W6 with W1 and W3), by key."""
        self.runner_app = f"gd-bench-runner-{os.getpid()}"
        """The application_name of every Runner's connections (in this or a child process)."""
        self.postmaster: int | None = None
        self.postmaster_note = "not looked for"

    # lifecycle

    def install(self) -> None:
        with self.admin.connect() as conn:
            found = conn.execute(
                text("SELECT count(*) FROM pg_namespace WHERE nspname = ANY(:s)"),
                {"s": [self.schema, self.ref_schema]},
            ).scalar_one()
        if found:
            raise SystemExit(
                f"schema {self.schema!r} or {self.ref_schema!r} exists in this database; the "
                "benchmark creates and drops its own: pick another with --schema"
            )
        durable.configure_schema(self.schema)
        gd_schema.install(self.admin, self.schema)
        self.postmaster, self.postmaster_note = cpu.find_postmaster(self.admin)
        log(f"server CPU: postmaster pid {self.postmaster or 'NONE'} ({self.postmaster_note})")

    def drop(self) -> None:
        with self.admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.ref_schema}" CASCADE')
        self.calibration.close()
        self.admin.dispose()

    def server_info(self) -> dict[str, Any]:
        with self.admin.connect() as conn:
            names = (
                "server_version",
                "fsync",
                "synchronous_commit",
                "shared_buffers",
                "max_connections",
                "wal_level",
                "max_wal_size",
            )
            settings = {n: conn.exec_driver_sql(f"SHOW {n}").scalar_one() for n in names}
        return settings

    # engines and measurement

    def runner_engine(self, concurrency: int, queues: int = 1, extra: int = 4) -> Engine:
        """A fresh engine for a Runner, pool sized for it; its statements are counted."""
        size = concurrency + queues + SERVICE_CONNECTIONS + extra
        return create_engine(
            with_app_name(self.url, self.runner_app), pool_size=size, max_overflow=0
        )

    def reset(self) -> None:
        """Empty the instance and signal tables (between runs)."""
        with self.admin.begin() as conn:
            conn.exec_driver_sql(
                f'TRUNCATE "{self.schema}".gd_instances, "{self.schema}".gd_signals, '
                f'"{self.schema}".gd_nodes'
            )
        self.exec_autocommit(f'VACUUM ANALYZE "{self.schema}".gd_instances')

    def exec_autocommit(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(sql)

    def server_stats(self) -> ServerStats:
        with self.admin.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                text(
                    "SELECT pg_current_wal_lsn()::text AS lsn, "
                    "(SELECT xact_commit FROM pg_stat_database "
                    " WHERE datname = current_database()) AS xact_commit, "
                    "coalesce(t.n_tup_upd, 0) AS upd, coalesce(t.n_tup_hot_upd, 0) AS hot "
                    "FROM (SELECT 1) one LEFT JOIN pg_stat_user_tables t "
                    "ON t.schemaname = :s AND t.relname = 'gd_instances'"
                ),
                {"s": self.schema},
            ).one()
            syncs = read_wal_syncs(conn)
        return ServerStats(row.lsn, int(row.xact_commit), syncs, int(row.upd), int(row.hot))

    def server_cpu(self) -> float | None:
        """CPU seconds the server's processes used so far (None: server not found here)."""
        return None if self.postmaster is None else cpu.tree_cpu(self.postmaster)

    def wal_bytes(self, start: str, end: str) -> int:
        with self.admin.connect() as conn:
            value = conn.execute(
                text("SELECT pg_wal_lsn_diff(CAST(:a AS pg_lsn), CAST(:b AS pg_lsn))"),
                {"a": end, "b": start},
            ).scalar_one()
        return int(value)

    def wait_runner_gone(self, timeout: float = 10.0) -> None:
        """Until the runner's backends exited (their statistics are flushed at exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.admin.connect() as conn:
                left = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                    {"a": self.runner_app},
                ).scalar_one()
            if not left:
                return
            time.sleep(0.05)

    @contextlib.contextmanager
    def meter(self, engine: Engine) -> Iterator[Meter]:
        """Measure a run on ``engine``; call :meth:`Meter.stop` at the run's end moment.

        The server-side counters are read after the block, once ``engine`` is disposed.
        """
        counter = SqlCounter(engine)
        meter = Meter(self, counter)
        try:
            yield meter
        finally:
            engine.dispose()
        meter.finish()

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        emit(figure.record())
        return figure


# -- a Runner draining pre-inserted work -----------------------------------------------------


def insert_specs(engine: Engine, specs: Iterator[Any] | Sequence[Any], chunk: int = 10_000) -> int:
    """``insert_all`` in transactions of ``chunk`` specs; returns how many were inserted."""
    from sqlalchemy.orm import Session

    total = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal total
        with Session(engine) as s, s.begin():
            total += len(durable.insert_all(s, batch))
        batch.clear()

    for spec in specs:
        batch.append(spec)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return total


@dataclass
class Run:
    """One timed run of a Runner: what it cost, and how far it got."""

    measured: Measured
    steps: int
    finished: int
    drained: bool
    phases: dict[str, float] = field(default_factory=dict)
    """CPU seconds of a child Runner outside the run, not in its CPU per step: ``startup``
    (before the clock started) and ``shutdown`` (after the run); ``lifetime``: all of it
    (``wait4``)."""
    stalled: bool = False
    """The run gave up: no step for a while (``benchmarks.proc.STALL``), work left."""
    threads: dict[str, float] = field(default_factory=dict)
    """CPU seconds of a child Runner's threads over the run, by kind of thread
    (:func:`benchmarks.cpu.thread_cpu`)."""

    @property
    def rate(self) -> float:
        return self.steps / self.measured.seconds


def top_up(bench: Bench, fsms: Sequence[str], make: Callable[[], Any], live: int) -> None:
    """Delete the finished instances of ``fsms``; insert new ones until ``live`` are left."""
    with bench.admin.begin() as conn:
        conn.execute(
            text(
                f'DELETE FROM "{bench.schema}".gd_instances '
                "WHERE fsm = ANY(:f) AND finished_at IS NOT NULL"
            ),
            {"f": list(fsms)},
        )
        have = conn.execute(
            text(
                f'SELECT count(*) FROM "{bench.schema}".gd_instances '
                "WHERE fsm = ANY(:f) AND finished_at IS NULL"
            ),
            {"f": list(fsms)},
        ).scalar_one()
    insert_specs(bench.admin, (make() for _ in range(max(0, live - have))))
    bench.exec_autocommit(f'VACUUM ANALYZE "{bench.schema}".gd_instances')


def clear(bench: Bench, fsms: Sequence[str]) -> None:
    """Delete every instance of ``fsms`` (finished or not)."""
    with bench.admin.begin() as conn:
        conn.execute(
            text(f'DELETE FROM "{bench.schema}".gd_instances WHERE fsm = ANY(:f)'),
            {"f": list(fsms)},
        )
    bench.exec_autocommit(f'VACUUM ANALYZE "{bench.schema}".gd_instances')


def drain_runs(
    bench: Bench,
    cls: type[durable.FSM] | type[durable.Job],
    backlog: int,
    concurrency: int,
    label: str,
    served: Sequence[str] | None = None,
    window: float | None = None,
) -> list[Run]:
    """``repeat`` runs of a Runner (a child process) at ``concurrency`` on a backlog of
    ``cls`` topped up before each run, each until the backlog is gone or ``window``
    seconds (default ``--window``) passed; the clock counts steps of ``served`` (default:
    ``cls`` alone)."""
    from benchmarks import proc

    runs: list[Run] = []
    for attempt in range(bench.options.repeat):
        bench.calibration.sample(concurrency)
        top_up(bench, [cls.name], cls.new, backlog)
        run = proc.drain(
            bench,
            queues={"default": concurrency},
            fsms=list(served) if served is not None else [cls.name],
            instances=backlog,
            window=bench.options.window if window is None else window,
        )
        runs.append(run)
        m = run.measured
        cpus = "".join(
            f", {name} {seconds * 1e6 / run.steps:.0f} us/step"
            for name, seconds in (("runner", m.runner_cpu_s), ("server", m.server_cpu_s))
            if seconds is not None and run.steps
        )
        log(
            f"  {label} c={concurrency} run {attempt + 1}: {run.rate:.0f} steps/s "
            f"({run.steps} steps{', drained' if run.drained else ''}{cpus})"
        )
    return runs
