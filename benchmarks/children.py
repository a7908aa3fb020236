"""W5 fan-out and join, through the workload of :mod:`benchmarks.fanout`: one parent
spawning N no-op children and joining them, against N independent no-op jobs inserted with
one ``insert_all``, on the same Runner configuration (concurrency 10).

The two modes alternate from run to run (so that a change in background load falls on
both). The figure is the fan-out side's rate, N children plus the parent's two steps over
the time from the parent's insert to its join's commit.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import gen_durable as durable
from benchmarks.common import Bench, Figure
from benchmarks.measure import Measured, summarize
from benchmarks.output import log, median

CONCURRENCY = 10


def _fanout() -> ModuleType | None:
    """The fan-out workload, or None while ``gen_durable.Spawn`` is not available."""
    try:
        from benchmarks import fanout
    except ImportError as exc:
        log(f"W5 skipped: the fan-out workload cannot be imported ({exc})")
        return None
    return fanout


def run(bench: Bench) -> None:
    fanout = _fanout()
    if fanout is None:
        bench.add(Figure("W5", "fan-out and join", None, "steps/s", extra={"skipped": True}))
        return
    n = 200 if bench.options.quick else 1_000
    log(f"W5: fan-out 1 -> {n:,} and join, against {n:,} jobs (concurrency {CONCURRENCY})")
    seconds: dict[str, list[float]] = {mode: [] for mode in fanout.MODES}
    costs: dict[str, list[Measured]] = {mode: [] for mode in fanout.MODES}
    for attempt in range(bench.options.repeat):
        bench.calibration.sample(CONCURRENCY)
        order = list(fanout.MODES) if attempt % 2 == 0 else list(reversed(fanout.MODES))
        for mode in order:
            bench.reset()
            engine = bench.runner_engine(CONCURRENCY)
            finish = fanout.Finish()
            with (
                bench.meter(engine) as meter,
                durable.Runner(
                    engine,
                    queues={"default": CONCURRENCY},
                    observer=finish,
                    gc_interval=3600.0,
                    check_schema=False,  # installed by this run
                ),
            ):
                meter.start()
                took = fanout.MODES[mode](engine, finish, n)
                meter.stop()
            assert meter.result is not None
            seconds[mode].append(took)
            costs[mode].append(meter.result)
            log(f"  W5 {mode} run {attempt + 1}: {took:.3f} s")
    fan, jobs = median(seconds["fanout"]), median(seconds["jobs"])
    steps = n + 2
    extra: dict[str, Any] = {
        "children": n,
        "fanout_seconds": round(fan, 4),
        "jobs_seconds": round(jobs, 4),
        "overhead": round(fan / jobs - 1, 3),
        "runs": [round(steps / s, 1) for s in seconds["fanout"]],
        **summarize(costs["fanout"], [steps] * len(costs["fanout"])),
    }
    bench.add(
        Figure(
            "W5",
            f"fan-out 1 -> {n:,} and join",
            steps / fan,
            "steps/s",
            clients=CONCURRENCY,
            tps_ref=bench.calibration.tps(CONCURRENCY),
            extra=extra,
        )
    )
