"""W9 concurrency keys without head-of-line delay, and W10 pickup latency at steady load.

Both run the Runner in a child process (:mod:`benchmarks.proc`), as in production, and
time each sample from the moment its inserting transaction's COMMIT is sent (as W3 does:
``perf_counter()`` just before ``commit()``, in this process) to the start of its step
(``perf_counter()`` first thing in ``perform``, in the child, reported as a ``stamp``).
``perf_counter`` is ``CLOCK_MONOTONIC`` on Linux, one clock for all the machine's processes.

- W9: 1,000 jobs on one concurrency key (limit 1, each sleeping 50 ms) inserted with one
  ``insert_all``, then at once 20 jobs on 20 other keys, each inserted in a transaction of
  its own; Runner at concurrency 10. The figure is the largest delay of the 20 (median
  over the runs): the 20 must not wait behind the hot key's backlog. Nine free slots and
  20 x 50 ms of work: about 0.1 s of that is capacity, not head-of-line blocking.
- W10: 150 jobs/s inserted with ``insert_all`` every 25 ms (3-4 per batch, no-op), for
  ``--pickup-seconds`` per run (``--repeat`` runs, one with ``--quick``); Runner with 16
  worker threads. Samples of the first second are dropped (warm-up); p50 and p99 are over
  the samples of all runs.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

import gen_durable as durable
from benchmarks import proc
from benchmarks.common import Bench, Figure
from benchmarks.output import log, median, percentile, rounded

HOT = 1_000
DISTINCT = 20
SLEEP = 0.05
W9_TARGET_S = 0.2
RATE = 150.0
PERIOD = 0.025
WARMUP_S = 1.0
W10_TARGET = "p50 <= 3, p99 <= 10 ms"


class Stamp(durable.Job):
    """Reports when it starts (``args["i"]``, if given), then sleeps ``args["sleep"]``."""

    name = "bench.Stamp"

    def perform(self, args: Any) -> None:
        at = time.perf_counter()
        if args.get("i") is not None:
            proc.stamp(args["i"], at)
        if args.get("sleep"):
            time.sleep(args["sleep"])


def _commit_one(bench: Bench, **options: Any) -> float:
    """Insert one Stamp in a transaction of its own; the moment its COMMIT was sent."""
    with Session(bench.admin) as s:
        s.begin()
        durable.insert(s, Stamp, **options)
        sent = time.perf_counter()
        s.commit()
    return sent


def w9_sample(bench: Bench) -> list[float]:
    """One W9 run on a fresh child Runner: the 20 delays, in seconds."""
    bench.reset()
    with proc.RunnerProcess(bench, {"default": 10}) as child:
        hot = [
            Stamp.new(args={"sleep": SLEEP}, concurrency_key="bench-hot", concurrency_limit=1)
            for _ in range(HOT)
        ]
        with Session(bench.admin) as s, s.begin():
            durable.insert_all(s, hot)
        sent = [
            _commit_one(
                bench,
                args={"i": i, "sleep": SLEEP},
                concurrency_key=f"bench-key-{i}",
                concurrency_limit=1,
            )
            for i in range(DISTINCT)
        ]
        started = child.wait_stamps(list(range(DISTINCT)), timeout=60.0)
    return [started[i] - sent[i] for i in range(DISTINCT)]


def run_w9(bench: Bench) -> None:
    log(f"W9: {HOT:,} jobs on one key (limit 1, {SLEEP * 1000:.0f} ms each), then {DISTINCT}")
    per_run = []
    for attempt in range(bench.options.repeat):
        delays = w9_sample(bench)
        per_run.append(delays)
        log(f"  W9 run {attempt + 1}: max {max(delays) * 1000:.1f} ms")
    maxima = [max(d) for d in per_run]
    value = median(maxima)
    bench.add(
        Figure(
            "W9",
            f"{DISTINCT} keyed jobs behind {HOT:,} on one key: max delay",
            value,
            "s",
            clients=10,
            extra={
                "target": f"<= {W9_TARGET_S} s",
                "met": value <= W9_TARGET_S,
                "run_max_s": [round(x, 4) for x in maxima],
                "run_p50_s": [round(median(d), 4) for d in per_run],
                "hot": HOT,
                "distinct": DISTINCT,
                "sleep_s": SLEEP,
            },
        )
    )
    bench.reset()


def feed(bench: Bench, seconds: float) -> tuple[dict[int, float], float]:
    """Insert Stamp jobs at RATE per second, a batch every PERIOD, for ``seconds``: the
    COMMIT moment of each sample (by number), and when the feed began."""
    sent: dict[int, float] = {}
    began = time.perf_counter()
    tick = 0
    while True:
        due = began + tick * PERIOD
        if due - began >= seconds:
            break
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        tick += 1
        batch = range(len(sent), int(RATE * PERIOD * tick))
        with Session(bench.admin) as s:
            s.begin()
            durable.insert_all(s, [Stamp.new(args={"i": i}) for i in batch])
            at = time.perf_counter()
            s.commit()
        sent.update((i, at) for i in batch)
    return sent, began


def w10_sample(bench: Bench, seconds: float) -> tuple[list[float], float]:
    """One W10 run: latencies in seconds (warm-up dropped), and the achieved insert rate."""
    bench.reset()
    with proc.RunnerProcess(bench, {"default": 16}) as child:
        sent, began = feed(bench, seconds)
        rate = len(sent) / (time.perf_counter() - began)
        started = child.wait_stamps(list(sent), timeout=60.0)
    return [started[i] - t for i, t in sent.items() if t - began >= WARMUP_S], rate


def run_w10(bench: Bench) -> None:
    seconds = bench.options.pickup_seconds
    log(f"W10: {RATE:.0f} jobs/s in batches every {PERIOD * 1000:.0f} ms for {seconds:g} s")
    per_run, rates = [], []
    for attempt in range(bench.options.few):
        samples, rate = w10_sample(bench, seconds)
        per_run.append([x * 1000 for x in samples])
        rates.append(rate)
        log(
            f"  W10 run {attempt + 1}: p50 {percentile(per_run[-1], 50):.2f} ms, "
            f"p99 {percentile(per_run[-1], 99):.2f} ms ({len(samples)} samples, {rate:.0f}/s)"
        )
    pooled = [x for run in per_run for x in run]
    bench.add(
        Figure(
            "W10",
            f"insert -> step start, {RATE:.0f} jobs/s, 16 threads",
            percentile(pooled, 50),
            "ms",
            clients=16,
            extra={
                "target": W10_TARGET,
                "p50_ms": rounded(percentile(pooled, 50)),
                "p90_ms": rounded(percentile(pooled, 90)),
                "p99_ms": rounded(percentile(pooled, 99)),
                "max_ms": rounded(max(pooled)),
                "samples": len(pooled),
                "run_p50_ms": [rounded(percentile(r, 50)) for r in per_run],
                "run_p99_ms": [rounded(percentile(r, 99)) for r in per_run],
                "insert_rate": [round(r, 1) for r in rates],
                "seconds": seconds,
            },
        )
    )
    bench.reset()
