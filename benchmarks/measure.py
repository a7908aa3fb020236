"""Measuring a run: what the driver sent, what the server did, how long it took.

Each run is bracketed by a :class:`Meter` (``Bench.meter``), which reads

- from the driver (SQLAlchemy events on the runner's own engine, :class:`SqlCounter`, in
  the Runner's process: a child Runner reports them): statements, BEGINs, COMMITs and
  ROLLBACKs — every statement of gen_durable goes through SQLAlchemy, and psycopg sends
  BEGIN and COMMIT as round trips of their own;
- from the server (:class:`ServerStats`): WAL bytes (``pg_current_wal_lsn()``), WAL
  flushes, committed transactions of the database and the update/HOT-update counters of
  ``gd_instances`` (read after the runner's connections closed, so that their statistics
  are flushed).

A child Runner's run adds the CPU seconds of the Runner and of the server
(:mod:`benchmarks.proc`, :mod:`benchmarks.cpu`). The result is a :class:`Measured`;
:func:`summarize` reduces repeated runs to per-step costs. :class:`Finished` is the Runner
observer that ends a run when its work is done (or it stalled).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, event

import gen_durable as durable
from benchmarks.output import median, rounded

if TYPE_CHECKING:
    from benchmarks.common import Bench


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


class Counts(Protocol):
    """What a Meter reads driver counts from: a :class:`SqlCounter`, or the counts a child
    Runner reported (empty when nobody counted)."""

    def snapshot(self) -> dict[str, int]: ...


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
    runner_cpu_s: float | None = None
    """CPU seconds of the Runner process(es) over the run (None: it ran in this process)."""
    server_cpu_s: float | None = None
    """CPU seconds of the PostgreSQL server's processes over the run (None: not found)."""

    @property
    def round_trips(self) -> int:
        d = self.driver
        return d["statements"] + d["begins"] + d["commits"] + d["rollbacks"]

    def per_step(self, steps: int) -> dict[str, float | None]:
        counted = bool(self.driver)

        def driver(value: float) -> float | None:
            return rounded(value / steps) if counted else None

        def cpu(seconds: float | None) -> float | None:
            return None if seconds is None else rounded(seconds * 1e6 / steps, 1)

        return {
            "commits_per_step": driver(self.driver.get("commits", 0)),
            "statements_per_step": driver(self.driver.get("statements", 0)),
            "round_trips_per_step": driver(self.round_trips if counted else 0),
            "runner_cpu_us_per_step": cpu(self.runner_cpu_s),
            "server_cpu_us_per_step": cpu(self.server_cpu_s),
            "server_commits_per_step": rounded(self.server_commits / steps),
            "wal_bytes_per_step": rounded(self.wal_bytes / steps, 1),
            "wal_flushes_per_step": (
                None if self.wal_syncs is None else rounded(self.wal_syncs / steps, 4)
            ),
            "hot_ratio": rounded(self.hot_updates / self.updates) if self.updates else None,
        }


# -- the meter -----------------------------------------------------------------------------


def read_wal_syncs(conn: Any) -> int | None:
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

    def __init__(self, bench: Bench, counter: Counts) -> None:
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
        self.last = 0.0
        """When the last counted step committed."""
        self.stalled = False

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
            self.last = time.perf_counter()
            if report.decision.finished:
                self.finished += 1
                if self.finished >= self._want:
                    self.at = time.perf_counter()
                    self._event.set()

    def wait(self, window: float, stall: float | None = None) -> tuple[float, int, int, bool]:
        """(end time, steps, finished instances, all finished) once all finished or after
        ``window`` seconds, whichever comes first; or, with ``stall``, once no step was
        counted for that long (``stalled``; the end time is then the last step's)."""
        deadline = time.perf_counter() + window
        done = False
        while not done:
            now = time.perf_counter()
            if now >= deadline:
                break
            with self._lock:
                idle = now - (self.last or deadline - window)
            if stall is not None and idle >= stall:
                self.stalled = True
                break
            done = self._event.wait(min(deadline - now, 1.0 if stall else window))
        with self._lock:
            if not done:
                self.at = self.last if self.stalled else time.perf_counter()
                self._event.set()  # later reports are not counted
            return self.at, self.steps, self.finished, done


def summarize(runs: Sequence[Measured], steps: Sequence[int]) -> dict[str, Any]:
    """Per-step costs of repeated runs (``steps[i]`` steps in run ``i``): the median of each."""
    per = [r.per_step(n) for r, n in zip(runs, steps, strict=True) if n]
    out: dict[str, Any] = {}
    for key in per[0] if per else ():
        values = [v for p in per if (v := p[key]) is not None]
        out[key] = rounded(median(values), 4) if values else None
    return out
