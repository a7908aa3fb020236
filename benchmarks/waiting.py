"""W8 waiting instances: W1 (jobs at concurrency 10, ``--steps`` drained) with 100,000
instances waiting in the queue it drains — half blocked on a concurrency key that is taken,
half rate-limited behind a bucket in debt — as a ratio to the same figure without them
(same run).

The Runner serves the waiting classes too (it would claim them if they were runnable), so
the figure shows what waiting work costs the claims of runnable work. The waiting rows
are seeded in the state the engine leaves them in (``blocked``; ``scheduled`` until the
bucket's debt ends, after the run) by ``sql/seed_waiting.sql``, then vacuumed and
analysed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

import gen_durable as durable
from benchmarks import jobs
from benchmarks.common import Bench
from benchmarks.output import log, median
from gen_durable.domain.routing import rate_bucket_of

SEED_SQL = Path(__file__).with_name("sql") / "seed_waiting.sql"


class Keyed(durable.Job):
    """Waits for its concurrency key (seeded as taken)."""

    name = "bench.wait.Keyed"

    def perform(self, args: Any) -> None:
        return None


class Limited(durable.Job):
    """Waits for its rate-limit bucket (seeded in debt)."""

    name = "bench.wait.Limited"
    rate_limit = durable.RateLimit(10, per=1)

    def perform(self, args: Any) -> None:
        return None


SERVED = [jobs.Noop.name, Keyed.name, Limited.name]
_BUCKET = rate_bucket_of(Limited, "perform", lambda: None)
assert _BUCKET is not None
BUCKET = _BUCKET[0]


def seed(bench: Bench, waiting: int) -> float:
    """Seed ``waiting`` rows (half of each kind) and VACUUM ANALYZE; returns seconds."""
    started = time.perf_counter()
    body = re.sub(r"--[^\n]*", "", SEED_SQL.read_text())
    with bench.admin.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{bench.schema}"')
        for statement in (s.strip() for s in body.split(";")):
            if statement:
                conn.execute(
                    text(statement),
                    {"keyed": waiting // 2, "limited": waiting - waiting // 2, "bucket": BUCKET},
                )
    bench.exec_autocommit(f'VACUUM ANALYZE "{bench.schema}".gd_instances')
    return time.perf_counter() - started


def run(bench: Bench) -> None:
    waiting = 100_000
    backlog = bench.options.steps
    bench.reset()
    log("W8: jobs at concurrency 10, nothing waiting")
    empty = median([r.rate for r in jobs.c10_runs(bench, "W8 baseline", SERVED)])
    bench.reset()
    log(f"W8: seeding {waiting:,} waiting instances")
    seconds = seed(bench, waiting)
    log(f"  seeded in {seconds:.1f} s")
    runs = jobs.c10_runs(bench, "W8", SERVED)
    with bench.admin.connect() as conn:
        left = conn.execute(
            text(
                f'SELECT count(*) FROM "{bench.schema}".gd_instances '
                "WHERE fsm = ANY(:f) AND status IN ('blocked', 'scheduled')"
            ),
            {"f": [Keyed.name, Limited.name]},
        ).scalar_one()
    value = median([r.rate for r in runs])
    figure = jobs.runs_figure(
        bench,
        "W8",
        f"jobs, concurrency 10, {waiting // 1000:,}k waiting (key, rate limit)",
        runs,
        10,
        backlog=backlog,
        waiting=waiting,
        still_waiting=left,
        seed_seconds=round(seconds, 1),
        empty_rate=round(empty, 1),
        ratio_to_empty=round(value / empty, 3) if empty else None,
    )
    log(f"  ratio to nothing waiting: {figure.extra['ratio_to_empty']}")
    bench.reset()
