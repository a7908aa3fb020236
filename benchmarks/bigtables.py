"""W6 big tables: W1 (jobs at concurrency 10, ``--steps`` of them drained) and W3 (wake-up
latency) with a million finished and a million far-future scheduled rows in
``gd_instances``, as ratios to the same figures on an empty table (taken in the same run:
from W1 and W3 if they ran, else here).

The rows are seeded by ``sql/seed_big_tables.sql`` (``INSERT ... SELECT generate_series``,
no library code), then the table is vacuumed and analysed, as autovacuum would have done on
a table that grew to that size over time.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from sqlalchemy import text

from benchmarks import jobs, latency
from benchmarks.common import Bench, clear
from benchmarks.output import log, median

SEED_SQL = Path(__file__).with_name("sql") / "seed_big_tables.sql"


def seed_statements() -> list[str]:
    """The seeding script's statements (comments dropped)."""
    body = re.sub(r"--[^\n]*", "", SEED_SQL.read_text())
    return [s.strip() for s in body.split(";") if s.strip()]


def seed(bench: Bench, done: int, scheduled: int) -> float:
    """Seed the rows and VACUUM ANALYZE; returns the seconds it took."""
    started = time.perf_counter()
    with bench.admin.begin() as conn:
        conn.exec_driver_sql(f'SET LOCAL search_path TO "{bench.schema}"')
        for statement in seed_statements():
            conn.execute(text(statement), {"done": done, "scheduled": scheduled})
    bench.exec_autocommit(f'VACUUM ANALYZE "{bench.schema}".gd_instances')
    return time.perf_counter() - started


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or not b:
        return None
    return round(a / b, 3)


def run(bench: Bench) -> None:
    rows = 100_000 if bench.options.quick else 1_000_000
    backlog = bench.options.steps
    empty_jobs = bench.results.get("W1.c10")
    empty_wakeup = bench.results.get("W3")
    if empty_jobs is None:
        log("W6: the empty-table baseline of W1 at concurrency 10")
        bench.reset()
        runs = jobs.c10_runs(bench, "W6 baseline")
        empty_jobs = jobs.runs_figure(
            bench, "W6", "baseline: jobs, concurrency 10, empty table", runs, 10, backlog=backlog
        )
    if empty_wakeup is None:
        log("W6: the empty-table baseline of W3")
        bench.reset()
        empty_wakeup = latency.latency_figure(
            bench,
            "W6",
            "baseline: insert -> step start, empty table",
            latency.wakeup_runs(bench),
        )
    bench.reset()
    log(f"W6: seeding {rows:,} finished + {rows:,} scheduled rows")
    seconds = seed(bench, rows, rows)
    log(f"  seeded in {seconds:.1f} s")
    label = f"{rows // 1000:,}k finished + {rows // 1000:,}k future rows"
    runs = jobs.c10_runs(bench, "W6")
    figure = jobs.runs_figure(
        bench,
        "W6",
        f"jobs, concurrency 10, {label}",
        runs,
        10,
        backlog=backlog,
        seeded_rows=2 * rows,
        seed_seconds=round(seconds, 1),
        ratio_to_empty=_ratio(median([r.rate for r in runs]), empty_jobs.value),
    )
    log(f"  ratio to the empty table: {figure.extra['ratio_to_empty']}")
    clear(bench, [jobs.Noop.name])  # W3 must not queue behind what is left of the backlog
    per_run = latency.wakeup_runs(bench)
    latency.latency_figure(
        bench,
        "W6",
        f"insert -> step start, idle, {label}",
        per_run,
        seeded_rows=2 * rows,
        ratio_to_empty=_ratio(latency.p50_ms(per_run), empty_wakeup.value),
    )
    bench.reset()
