"""W3 wake-up and W4 signal round trip: latencies on a running Runner.

- W3: from the COMMIT of an ``insert`` (the moment the caller sends it) to the start of the
  job's step, on an idle Runner: the NOTIFY sent in the caller's transaction, the LISTEN
  connection, a claim, a worker.
- W4: from the COMMIT of a ``signal`` to the start of the awaiting instance's next step;
  idle, and while the same Runner drains a W1 backlog on another queue (the awaiting
  instance has a queue of its own, so the backlog's FIFO order does not delay it).

Samples are spaced by a random pause, so that each one starts from an idle Runner; the first
few of each run are discarded (prepared statements, caches). Percentiles are over the
samples of all runs.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from sqlalchemy.orm import Session

import gen_durable as durable
from benchmarks.common import Bench, Figure, top_up
from benchmarks.jobs import Noop
from benchmarks.output import log, median, percentile, rounded

WARMUP = 5
W3_TARGET = "p50 <= 1.5, p99 <= 4 ms"
SIGNAL_QUEUE = "bench-signal"
ECHO_KEY = "bench-echo"


class Probe:
    """Step start times by sample number, and commits of the echo instance."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started: dict[int, float] = {}
        self.echo_commits = 0
        self.load_steps = 0

    def started(self, sample: int) -> None:
        at = time.perf_counter()
        with self._cond:
            self._started[sample] = at
            self._cond.notify_all()

    def wait_started(self, sample: int, timeout: float = 10.0) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: sample in self._started, timeout):
                raise TimeoutError(f"sample {sample} did not start within {timeout}s")
            return self._started.pop(sample)

    def observe(self, report: durable.StepReport) -> None:
        if not report.committed:
            return
        with self._cond:
            if report.fsm == Echo.name:
                self.echo_commits += 1
                self._cond.notify_all()
            elif report.fsm == Noop.name:
                self.load_steps += 1

    def wait_echo_commits(self, count: int, timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.echo_commits >= count, timeout):
                raise TimeoutError(f"the echo instance did not commit within {timeout}s")


PROBE = Probe()


class Ping(durable.Job):
    """Records when its step starts."""

    name = "bench.Ping"

    def perform(self, args: Any) -> None:
        PROBE.started(args["i"])


class Echo(durable.FSM):
    """Awaits ``ping`` forever; records when each signal's step starts."""

    name = "bench.Echo"
    queue = SIGNAL_QUEUE
    steps = ("wait",)

    def step(self, name: str, ctx: durable.Context) -> durable.Await:
        if ctx.awaited:
            PROBE.started(ctx.awaited[0].payload["i"])
        return durable.Await("ping", then="wait")


def _pause() -> None:
    time.sleep(random.uniform(0.005, 0.025))


def _runner(bench: Bench, queues: dict[str, int]) -> tuple[durable.Runner, Any]:
    engine = bench.runner_engine(sum(queues.values()), len(queues))
    runner = durable.Runner(
        engine,
        queues=queues,
        observer=PROBE.observe,
        gc_interval=3600.0,
        check_schema=False,  # installed by this run
    )
    return runner, engine


def _wait_listening(runner: durable.Runner) -> None:
    if runner.listener is not None and not runner.listener.connected.wait(10):
        raise TimeoutError("the runner's LISTEN connection did not come up")


def wakeup_samples(bench: Bench, samples: int) -> list[float]:
    """One run of W3 on a fresh Runner: latencies in seconds."""
    runner, engine = _runner(bench, {"default": 10})
    out: list[float] = []
    with runner:
        _wait_listening(runner)
        for i in range(samples + WARMUP):
            _pause()
            with Session(bench.admin) as s:
                s.begin()
                durable.insert(s, Ping, args={"i": i})
                sent = time.perf_counter()
                s.commit()
            started = PROBE.wait_started(i)
            if i >= WARMUP:
                out.append(started - sent)
    engine.dispose()
    return out


def signal_samples(bench: Bench, samples: int, load: int = 0) -> tuple[list[float], float]:
    """One run of W4: latencies in seconds, and the load's rate (steps/s) meanwhile."""
    queues = {SIGNAL_QUEUE: 2}
    if load:
        top_up(bench, [Noop.name], Noop.new, load)
        queues = {"default": 10, **queues}
    with bench.admin.begin() as conn:
        durable.insert(conn, Echo, correlation_key=ECHO_KEY)
    runner, engine = _runner(bench, queues)
    out: list[float] = []
    with runner:
        _wait_listening(runner)
        commits = PROBE.echo_commits + 1
        PROBE.wait_echo_commits(commits)  # parked on its first Await
        load_from, load_at = PROBE.load_steps, time.perf_counter()
        for i in range(samples + WARMUP):
            _pause()
            with Session(bench.admin) as s:
                s.begin()
                durable.signal(s, ECHO_KEY, "ping", {"i": i})
                sent = time.perf_counter()
                s.commit()
            started = PROBE.wait_started(i)
            commits += 1
            PROBE.wait_echo_commits(commits)
            if i >= WARMUP:
                out.append(started - sent)
        load_rate = (PROBE.load_steps - load_from) / (time.perf_counter() - load_at)
        left = _live(bench, Noop.name) if load else 0
    engine.dispose()
    with bench.admin.begin() as conn:
        durable.cancel(conn, ECHO_KEY)
    if load and not left:
        log("  warning: the W1 backlog ran out before the W4 samples ended")
    return out, load_rate


def _live(bench: Bench, fsm: str) -> int:
    with bench.admin.connect() as conn:
        return int(
            conn.exec_driver_sql(
                f'SELECT count(*) FROM "{bench.schema}".gd_instances '
                "WHERE fsm = %(f)s AND finished_at IS NULL",
                {"f": fsm},
            ).scalar_one()
        )


def latency_figure(
    bench: Bench, workload: str, name: str, per_run: list[list[float]], **extra: Any
) -> Figure:
    pooled = [x * 1000 for run in per_run for x in run]
    return bench.add(
        Figure(
            workload,
            name,
            percentile(pooled, 50),
            "ms",
            extra={
                "p50_ms": rounded(percentile(pooled, 50)),
                "p90_ms": rounded(percentile(pooled, 90)),
                "p99_ms": rounded(percentile(pooled, 99)),
                "max_ms": rounded(max(pooled)),
                "samples": len(pooled),
                "run_p50_ms": [rounded(median([x * 1000 for x in r])) for r in per_run],
                **extra,
            },
        )
    )


def sample_count(bench: Bench) -> int:
    return 30 if bench.options.quick else 100


def wakeup_runs(bench: Bench) -> list[list[float]]:
    """W3's samples, ``repeat`` runs of them (a fresh Runner each)."""
    return [wakeup_samples(bench, sample_count(bench)) for _ in range(bench.options.repeat)]


def p50_ms(per_run: list[list[float]]) -> float:
    return percentile([x * 1000 for run in per_run for x in run], 50)


def run_w3(bench: Bench) -> None:
    bench.reset()
    log("W3: insert -> step start on an idle Runner")
    figure = latency_figure(
        bench, "W3", "insert -> step start, idle", wakeup_runs(bench), target=W3_TARGET
    )
    bench.results["W3"] = figure


def run_w4(bench: Bench) -> None:
    bench.reset()
    log("W4: signal -> next step start, idle")
    n = sample_count(bench)
    per_run = [signal_samples(bench, n)[0] for _ in range(bench.options.repeat)]
    latency_figure(bench, "W4", "signal -> next step start, idle", per_run)
    load = 10_000 if bench.options.quick else 60_000
    log(f"W4: signal -> next step start, while draining a W1 backlog ({load:,} jobs, c=10)")
    bench.reset()
    per_run, rates = [], []
    for _ in range(bench.options.repeat):
        samples, rate = signal_samples(bench, n, load)
        per_run.append(samples)
        rates.append(rate)
    latency_figure(
        bench,
        "W4",
        "signal -> next step start, under W1 load",
        per_run,
        load_steps_per_s=round(median(rates), 1),
    )
