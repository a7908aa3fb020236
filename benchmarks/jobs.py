"""W1 jobs: no-op jobs pre-inserted with ``insert_all``, drained by one Runner (in a child
process, :mod:`benchmarks.proc`) at concurrency 10 and 50; and the enqueue rate of
``insert`` (one row per transaction) and of ``insert_all`` (bulk).

At concurrency 10 a run drains ``--steps`` jobs (20,000) to the end; at 50 it stops when
its backlog is gone or its window closes, whichever comes first. The rate is the steps
committed meanwhile over the time taken; the Runner's CPU and the server's are measured
over the same run. Between runs the finished rows are deleted and the backlog topped up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

import gen_durable as durable
from benchmarks.common import Bench, Figure, Run, drain_runs, insert_specs
from benchmarks.measure import Measured, summarize
from benchmarks.output import log, median, rounded


class Noop(durable.Job):
    """A job that does nothing: what is left is the engine's own cost."""

    name = "bench.Noop"

    def perform(self, args: Any) -> None:
        return None


def backlog_size(bench: Bench) -> int:
    return 10_000 if bench.options.quick else 100_000


def c10_runs(bench: Bench, label: str, served: list[str] | None = None) -> list[Run]:
    """W1 at concurrency 10: ``--steps`` jobs drained to the end, ``repeat`` times (also the
    baseline and the loaded runs of W6 and W8)."""
    steps = bench.options.steps
    window = bench.options.counted_window
    return drain_runs(bench, Noop, steps, 10, label, served, window=window)


def cpu_runs(runs: list[Run]) -> dict[str, Any]:
    """The CPU figures of each run (per step: the Runner's and the server's over the run,
    and the Runner's whole life from ``wait4``; in seconds: its start-up and shutdown)."""

    def per_step(seconds: float | None, steps: int) -> float | None:
        return None if seconds is None or not steps else round(seconds * 1e6 / steps, 1)

    out: dict[str, Any] = {
        "runner_cpu_us_runs": [per_step(r.measured.runner_cpu_s, r.steps) for r in runs],
        "server_cpu_us_runs": [per_step(r.measured.server_cpu_s, r.steps) for r in runs],
    }
    if all("lifetime" in r.phases for r in runs):
        lifetime = [per_step(r.phases["lifetime"], r.steps) for r in runs]
        out["runner_cpu_lifetime_us_runs"] = lifetime
        known = [x for x in lifetime if x is not None]
        out["runner_cpu_lifetime_us_per_step"] = median(known) if known else None
        for phase in ("startup", "shutdown"):
            out[f"runner_{phase}_cpu_s_runs"] = [rounded(r.phases[phase]) for r in runs]
    if all(r.threads and r.steps for r in runs):
        # Where the Runner's CPU goes: each kind of thread's share, per step (median).
        kinds = sorted({k for r in runs for k in r.threads})
        out["runner_threads_us_per_step"] = {
            k: round(median([r.threads.get(k, 0.0) * 1e6 / r.steps for r in runs]), 1)
            for k in kinds
        }
    return out


def runs_figure(
    bench: Bench, workload: str, name: str, runs: list[Run], concurrency: int, **extra: Any
) -> Figure:
    rates = [r.rate for r in runs]
    steps = [r.steps for r in runs]
    cpu = cpu_runs(runs)
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
                **({"stalled": [r.stalled for r in runs]} if any(r.stalled for r in runs) else {}),
                **cpu,
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
    steps = bench.options.steps
    log(f"W1: {steps:,} no-op jobs drained at concurrency 10")
    runs = c10_runs(bench, "W1")
    bench.results["W1.c10"] = runs_figure(
        bench, "W1", "jobs, concurrency 10", runs, 10, backlog=steps
    )
    log(f"W1: a backlog of {backlog:,} no-op jobs at concurrency 50")
    runs = drain_runs(bench, Noop, backlog, 50, "W1")
    bench.results["W1.c50"] = runs_figure(
        bench, "W1", "jobs, concurrency 50", runs, 50, backlog=backlog
    )
    log("W1: enqueue rates")
    enqueue_single(bench, 200 if quick else 1000)
    enqueue_bulk(bench, 10_000 if quick else 50_000)
