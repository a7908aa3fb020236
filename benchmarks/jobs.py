"""W1 jobs: no-op jobs pre-inserted with ``insert_all``, drained by one Runner at
concurrency 10 and 50; and the enqueue rate of ``insert`` (one row per transaction) and of
``insert_all`` (bulk).

A drain run stops when the backlog is gone or its window closes, whichever comes first; the
rate is the steps committed meanwhile over the time taken. Between runs the finished rows
are deleted and the backlog topped up to its size again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

import gen_durable as durable
from benchmarks.common import Bench, Figure, Run, drain_runs, insert_specs
from benchmarks.measure import Measured, summarize
from benchmarks.output import log, median


class Noop(durable.Job):
    """A job that does nothing: what is left is the engine's own cost."""

    name = "bench.Noop"

    def perform(self, args: Any) -> None:
        return None


def backlog_size(bench: Bench) -> int:
    return 10_000 if bench.options.quick else 100_000


def runs_figure(
    bench: Bench, workload: str, name: str, runs: list[Run], concurrency: int, **extra: Any
) -> Figure:
    rates = [r.rate for r in runs]
    steps = [r.steps for r in runs]
    return bench.add(
        Figure(
            workload,
            name,
            median(rates),
            "steps/s",
            clients=concurrency,
            tps_ref=bench.calibration.tps(concurrency),
            extra={
                **extra,
                "runs": [round(r, 1) for r in rates],
                "steps": steps,
                "drained": all(r.drained for r in runs),
                **summarize([r.measured for r in runs], steps),
            },
        )
    )


def enqueue_single(bench: Bench, count: int) -> Figure:
    """``insert`` of one job per transaction, one client after another."""
    rates: list[float] = []
    runs: list[Measured] = []
    for _ in range(bench.options.repeat):
        bench.calibration.sample(1)
        bench.reset()
        engine = bench.runner_engine(1)
        with bench.meter(engine) as meter:
            for _ in range(count):
                with Session(engine) as s, s.begin():
                    durable.insert(s, Noop)
            meter.stop()
        assert meter.result is not None
        rates.append(count / meter.result.seconds)
        runs.append(meter.result)
    return bench.add(
        Figure(
            "W1",
            "enqueue: insert(), 1 per tx",
            median(rates),
            "rows/s",
            clients=1,
            tps_ref=bench.calibration.tps(1),
            extra={
                "rows": count,
                "runs": [round(r, 1) for r in rates],
                **summarize(runs, [count] * len(runs)),
            },
        )
    )


def enqueue_bulk(bench: Bench, count: int, batch: int = 1000) -> Figure:
    """``insert_all`` of ``batch`` jobs per transaction, one client."""
    rates: list[float] = []
    runs: list[Measured] = []
    for _ in range(bench.options.repeat):
        bench.reset()
        engine = bench.runner_engine(1)
        with bench.meter(engine) as meter:
            insert_specs(engine, (Noop.new() for _ in range(count)), chunk=batch)
            meter.stop()
        assert meter.result is not None
        rates.append(count / meter.result.seconds)
        runs.append(meter.result)
    return bench.add(
        Figure(
            "W1",
            f"enqueue: insert_all(), {batch:,} per tx",
            median(rates),
            "rows/s",
            clients=1,
            tps_ref=bench.calibration.tps(1),
            extra={
                "rows": count,
                "runs": [round(r, 1) for r in rates],
                **summarize(runs, [count] * len(runs)),
            },
        )
    )


def run(bench: Bench) -> None:
    quick = bench.options.quick
    backlog = backlog_size(bench)
    bench.reset()
    for concurrency in (10, 50):
        log(f"W1: a backlog of {backlog:,} no-op jobs at concurrency {concurrency}")
        runs = drain_runs(bench, Noop, backlog, concurrency, "W1")
        figure = runs_figure(
            bench, "W1", f"jobs, concurrency {concurrency}", runs, concurrency, backlog=backlog
        )
        bench.results[f"W1.c{concurrency}"] = figure
    log("W1: enqueue rates")
    enqueue_single(bench, 200 if quick else 1000)
    enqueue_bulk(bench, 10_000 if quick else 50_000)
