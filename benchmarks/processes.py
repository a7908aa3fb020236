"""W1P: W1 (no-op jobs) on ``gen-durable run --processes N --queues default=10`` for
N = 1, 2, 4: the supervisor splits the queue's concurrency of 10 between its N runner
processes (shares adding up to 10), so the total concurrency stays 10.

The real CLI runs as a child of the bench (``--dsn`` with the bench's application_name,
``--import benchmarks.worker_app`` for the schema and the classes). Each run:

1. pauses the queue, tops the backlog up to ``--steps`` jobs, starts the CLI and waits
   until its N runners are in ``gd_nodes`` (pids below the supervisor) and LISTENing;
   the shares reported are what those rows say the runners run;
2. reads the CPU of the supervisor's process tree so far (``/proc``: start-up) and the
   server's, resumes the queue (``clock_timestamp()`` of that transaction starts the
   clock), and polls every 0.1 s whether a job of the backlog is left unfinished;
3. reads the server's CPU and the tree's again, sends SIGTERM to the supervisor and reaps
   it with ``wait4``: its CPU includes the runners it waited for (``RUSAGE_CHILDREN``).

Runs: ``--repeat`` (median), one with ``--quick``. Rate: finished jobs over
``max(finished_at)`` minus the resume (both the server's clock). Runner CPU per step: the
tree's CPU at the end minus at the resume, over the jobs; the ``wait4`` CPU of the whole
supervisor's life is reported too, with its start-up (to the resume) and shutdown (after
the end) apart. Without a ``--processes`` option in ``gen-durable run --help`` the rows are
skipped, with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

import gen_durable as durable
from benchmarks import cpu, proc
from benchmarks.common import Bench, Figure, Run, top_up
from benchmarks.connection import libpq_uri, with_app_name
from benchmarks.jobs import Noop, runs_figure
from benchmarks.measure import Meter
from benchmarks.output import log

PROCESSES = (1, 2, 4)
TOTAL = 10
CLI = Path(sys.executable).with_name("gen-durable")


def unavailable() -> str | None:
    """Why the multi-process runs cannot run, or None."""
    if not CLI.exists():
        return f"{CLI} not found"
    try:
        done = subprocess.run(
            [str(CLI), "run", "--help"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"gen-durable run --help failed: {exc}"
    if "--processes" not in done.stdout:
        return "gen-durable run has no --processes option (yet)"
    return None


class _NoCounts:
    """Nobody counts the CLI's statements: the driver columns stay empty."""

    def snapshot(self) -> dict[str, int]:
        return {}


def _ready(bench: Bench, root: int, n: int) -> list[int] | None:
    """The concurrency of each of the ``n`` runners below ``root`` once all are up (and
    LISTENing), else None."""
    pids = sorted(cpu.descendants(root))
    with bench.admin.connect() as conn:
        queues = conn.execute(
            text(f'SELECT queues FROM "{bench.schema}".gd_nodes WHERE pid = ANY(:p)'),
            {"p": pids},
        ).scalars()
        shares = sorted((sum(int(c) for c in q.values()) for q in queues), reverse=True)
        listening = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = :a AND query LIKE 'LISTEN%'"
            ),
            {"a": bench.runner_app},
        ).scalar_one()
    return shares if len(shares) >= n and listening >= n else None


def _wait_drained(bench: Bench, live: str) -> bool:
    """Poll (every 0.1 s, cheaply) until no job of the backlog is unfinished, or the
    window passed; True if it stalled (none finished for ``proc.STALL`` seconds)."""
    exists = text(f"SELECT EXISTS (SELECT 1 FROM {live} AND finished_at IS NULL)")
    count = text(f"SELECT count(*) FROM {live} AND finished_at IS NULL")
    deadline = time.monotonic() + bench.options.counted_window
    seen, since, counted = -1, time.monotonic(), 0.0
    while (now := time.monotonic()) < deadline:
        with bench.admin.connect() as conn:
            if now - counted < 2.0:
                left = int(conn.execute(exists, {"f": Noop.name}).scalar_one())
            else:  # a count now and then, to notice a stall
                counted = now
                left = conn.execute(count, {"f": Noop.name}).scalar_one()
                if left != seen:
                    seen, since = left, now
                elif now - since >= proc.STALL:
                    return True
        if not left:
            return False
        time.sleep(0.1)
    return False


def cli_drain(bench: Bench, n: int, jobs: int) -> tuple[Run, list[int]]:
    """One run (see the module's docstring): the Run, and the runners' concurrencies."""
    url = with_app_name(bench.url, bench.runner_app).render_as_string(hide_password=False)
    cmd = [str(CLI), "run", "--processes", str(n), "--dsn", libpq_uri(url)]
    cmd += ["--import", "benchmarks.worker_app", "--queues", f"default={TOTAL}", "--grace", "10"]
    env = {**proc.child_env(), "GD_BENCH_SCHEMA": bench.schema}
    live = f'"{bench.schema}".gd_instances WHERE fsm = :f'
    proc.set_paused(bench, ["default"], True)
    resumed = False
    with tempfile.TemporaryFile("w+") as err:
        sup = subprocess.Popen(
            cmd,
            cwd=proc.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120.0
            while (shares := _ready(bench, sup.pid, n)) is None:
                if sup.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    raise RuntimeError(f"gen-durable run did not come up: {err.read()[-2000:]}")
                time.sleep(0.1)
            meter = Meter(bench, _NoCounts())
            started_cpu = cpu.tree_cpu(sup.pid) or 0.0
            server0 = bench.server_cpu()
            meter.start()
            with bench.admin.begin() as conn:
                began = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
                durable.resume_queue(conn, "default")
            resumed = True
            stalled = _wait_drained(bench, live)
            meter.stop()
            server1 = bench.server_cpu()
            ended_cpu = cpu.tree_cpu(sup.pid) or 0.0
            os.kill(sup.pid, signal.SIGTERM)
            total, clean = cpu.wait_cpu(sup, 60.0)
            if not clean:
                log("  warning: the supervisor did not exit within 60 s of SIGTERM (killed)")
        except BaseException:
            if sup.returncode is None:
                cpu.kill_group(sup)
                sup.wait()
            raise
        finally:
            if not resumed:
                proc.set_paused(bench, ["default"], False)
    meter.finish()
    with bench.admin.connect() as conn:
        done, last = conn.execute(
            text(f"SELECT count(finished_at), max(finished_at) FROM {live}"), {"f": Noop.name}
        ).one()
    assert meter.result is not None
    meter.result.seconds = (last - began).total_seconds() if done else meter.result.seconds
    meter.result.runner_cpu_s = ended_cpu - started_cpu
    if server0 is not None and server1 is not None:
        meter.result.server_cpu_s = server1 - server0
    phases = {"startup": started_cpu, "shutdown": total - ended_cpu, "lifetime": total}
    if stalled:
        log(f"  warning: no job finished for {proc.STALL:.0f} s, {done} of {jobs} finished")
    return Run(meter.result, int(done), int(done), done >= jobs, phases, stalled), shares


def run(bench: Bench) -> None:
    cpus = os.cpu_count()
    reason = unavailable()
    jobs = bench.options.steps
    for n in PROCESSES:
        name = f"jobs, {n} process{'es' if n > 1 else ''}, c={TOTAL} in all (CLI), {cpus} CPUs"
        if reason is not None:
            log(f"W1P skipped: {reason}")
            bench.add(Figure("W1P", name, None, "steps/s", extra={"skipped": reason, "cpus": cpus}))
            continue
        log(f"W1P: {jobs:,} no-op jobs, gen-durable run --processes {n} --queues default={TOTAL}")
        bench.reset()
        runs, shares = [], []
        for attempt in range(bench.options.few):
            bench.calibration.sample(TOTAL)
            top_up(bench, [Noop.name], Noop.new, jobs)
            run_, got = cli_drain(bench, n, jobs)
            runs.append(run_)
            shares.append(got)
            per_step = (run_.measured.runner_cpu_s or 0) * 1e6 / max(1, run_.steps)
            log(
                f"  W1P n={n} run {attempt + 1}: {run_.rate:.0f} steps/s ({run_.steps} jobs, "
                f"shares {got}, runner {per_step:.0f} us/step)"
            )
        extra: dict[str, Any] = {"processes": n, "cpus": cpus, "jobs": jobs, "shares": shares}
        if any(len(s) != n or sum(s) != TOTAL for s in shares):
            extra["note"] = (
                f"the runners' concurrencies were {shares}, not {n} adding up to {TOTAL}"
            )
        runs_figure(bench, "W1P", name, runs, TOTAL, **extra)
    bench.reset()
