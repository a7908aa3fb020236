"""A Runner in a child process of its own, as it runs in production, driven by the bench.

The child (``python -m benchmarks.proc ...``) imports the benchmark classes, starts a
Runner and talks JSON lines on stdout; the parent (:class:`RunnerProcess`) answers on its
stdin:

1. child: ``ready`` once the Runner started and its LISTEN connection is up;
2. parent: ``go``; child: ``go`` with its own CPU so far (``RUSAGE_SELF``: imports, engine,
   Runner start) and its driver counts (:class:`~benchmarks.measure.SqlCounter`);
3. child: ``done`` when ``--expect`` instances of ``--fsms`` finished (or ``--window``
   seconds passed), or when the parent says ``stop``: the end time, steps, counts, CPU;
   meanwhile a job may report its start time (:func:`stamp`) as a ``stamp`` line;
4. child: stops the Runner and exits; the parent reaps it with ``wait4``.

Times are ``time.perf_counter()`` on both sides: ``CLOCK_MONOTONIC`` on Linux, one clock
for every process of the machine. :func:`drain` is the throughput run built on this: the
backlog's queues are paused while the child starts, and resumed at ``go``.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import cpu
from benchmarks.connection import with_app_name
from benchmarks.output import log

if TYPE_CHECKING:
    from benchmarks.common import Bench, Run

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("benchmarks.jobs", "benchmarks.fsms", "benchmarks.waiting", "benchmarks.pickup")
"""Imported by the child: every class a benchmark Runner serves (all registered, as in the
bench's own process)."""
STALL = 30.0
"""Seconds without a step after which a run gives up (stalled: it is reported, not hung)."""
_out_lock = threading.Lock()


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout's ``benchmarks`` importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path}


def say(**record: Any) -> None:
    """One JSON line to the parent (thread-safe)."""
    line = json.dumps(record)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def stamp(sample: int, at: float) -> None:
    """In the child: report that sample ``sample`` started at ``at`` (perf_counter)."""
    say(event="stamp", i=sample, t=at)


class RunnerProcess:
    """The parent's side of one child Runner (see the module's docstring)."""

    def __init__(
        self,
        bench: Bench,
        queues: dict[str, int],
        *,
        fsms: tuple[str, ...] | list[str] = (),
        expect: int = 0,
        window: float = 0.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.window = window
        url = with_app_name(bench.url, bench.runner_app).render_as_string(hide_password=False)
        self.cmd = [
            sys.executable,
            "-m",
            "benchmarks.proc",
            "--url",
            url,
            "--schema",
            bench.schema,
            "--queues",
            ",".join(f"{q}={c}" for q, c in queues.items()),
            "--fsms",
            ",".join(fsms),
            "--expect",
            str(expect),
            "--window",
            str(window),
            "--poll-interval",
            str(poll_interval),
        ]
        self.stamps: dict[int, float] = {}
        self._cond = threading.Condition()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed when reaped)
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            start_new_session=True,  # its group is ours to kill if it hangs
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self._expect("ready", timeout)

    def go(self) -> dict[str, Any]:
        self._send("go")
        return self._expect("go", 30.0)

    def wait_done(self, timeout: float) -> dict[str, Any]:
        return self._expect("done", timeout)

    def stop(self) -> dict[str, Any]:
        self._send("stop")
        return self._expect("done", 30.0)

    def reap(self, timeout: float = 60.0) -> float:
        """Wait for the child's exit; its CPU seconds (``wait4``)."""
        assert self.proc is not None
        seconds, clean = cpu.wait_cpu(self.proc, timeout)
        if not clean or self.proc.returncode != 0:
            raise RuntimeError(f"the Runner child failed ({self.proc.returncode}): {self.stderr()}")
        self._err.close()
        return seconds

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            cpu.kill_group(self.proc)
            self.proc.wait()
        self._err.close()

    def wait_stamps(self, samples: list[int], timeout: float) -> dict[int, float]:
        with self._cond:
            if not self._cond.wait_for(lambda: all(i in self.stamps for i in samples), timeout):
                missing = sum(1 for i in samples if i not in self.stamps)
                raise TimeoutError(f"{missing} of {len(samples)} samples did not start")
            return {i: self.stamps[i] for i in samples}

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()[-3000:]

    # internals

    def _send(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:  # not ours: something in the child printed to stdout
                print(f"runner child: {line.rstrip()}", file=sys.stderr)
                continue
            if record.get("event") == "stamp":
                with self._cond:
                    self.stamps[record["i"]] = record["t"]
                    self._cond.notify_all()
            else:
                self._events.put(record)
        self._events.put({"event": "eof"})

    def _expect(self, event: str, timeout: float) -> dict[str, Any]:
        try:
            record = self._events.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no {event!r} from the Runner child in {timeout:.0f} s") from None
        if record.get("event") != event:
            raise RuntimeError(
                f"expected {event!r} from the Runner child, got {record}: {self.stderr()}"
            )
        return record

    def __enter__(self) -> RunnerProcess:
        try:
            self.start()
            self.go()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.kill()
            return
        try:
            self.stop()
            self.reap()
        except BaseException:
            self.kill()
            raise


class _Counts:
    """Driver counts as the child last reported them (a Meter's counter)."""

    def __init__(self) -> None:
        self.value: dict[str, int] = {}

    def snapshot(self) -> dict[str, int]:
        return dict(self.value)


def set_paused(bench: Bench, queues: list[str], paused: bool) -> None:
    import gen_durable as durable

    with bench.admin.begin() as conn:
        for name in queues:
            (durable.pause_queue if paused else durable.resume_queue)(conn, name)


def drain(
    bench: Bench,
    *,
    queues: dict[str, int],
    fsms: list[str],
    instances: int,
    window: float,
    poll_interval: float = 1.0,
) -> Run:
    """A child Runner on work already inserted: the clock runs from resuming its paused
    queues until ``instances`` of ``fsms`` finished or ``window`` seconds passed.

    Runner CPU: what the child used from ``go`` to ``done`` (its own ``RUSAGE_SELF``, every
    thread), i.e. its ``wait4`` CPU less its start-up (imports, engine, Runner start) and
    its shutdown (Runner stop, interpreter exit), which are reported apart (``phases``).
    Server CPU: the postmaster's process tree (:mod:`benchmarks.cpu`) over the run.
    """
    from benchmarks.common import Run
    from benchmarks.measure import Meter

    counts = _Counts()
    child = RunnerProcess(
        bench, queues, fsms=fsms, expect=instances, window=window, poll_interval=poll_interval
    )
    set_paused(bench, list(queues), True)
    resumed = False
    try:
        child.start()
        meter = Meter(bench, counts)
        ack = child.go()
        counts.value = ack["driver"]
        server0 = bench.server_cpu()
        started = time.perf_counter()
        meter.start(started)
        set_paused(bench, list(queues), False)
        resumed = True
        done = child.wait_done(window + 60.0)
        counts.value = done["driver"]
        meter.stop(done["end"])
        server1 = bench.server_cpu()
        total = child.reap()
    except BaseException:
        child.kill()
        raise
    finally:
        if not resumed:
            set_paused(bench, list(queues), False)
    meter.finish()
    assert meter.result is not None
    meter.result.runner_cpu_s = done["cpu_s"] - ack["cpu_s"]
    if server0 is not None and server1 is not None:
        meter.result.server_cpu_s = server1 - server0
    phases = {"startup": ack["cpu_s"], "shutdown": total - done["cpu_s"], "lifetime": total}
    threads = {
        name: seconds - ack["threads"].get(name, 0.0) for name, seconds in done["threads"].items()
    }
    if done["stalled"]:
        log(f"  warning: no step for {STALL:.0f} s, {done['finished']} of {instances} finished")
    return Run(
        meter.result,
        done["steps"],
        done["finished"],
        done["drained"],
        phases,
        done["stalled"],
        threads,
    )


# -- the child -------------------------------------------------------------------------------


def child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proc")
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--queues", required=True, help="NAME=CONCURRENCY,...")
    parser.add_argument("--fsms", default="", help="classes whose steps count")
    parser.add_argument("--expect", type=int, default=0, help="0: run until 'stop'")
    parser.add_argument("--window", type=float, default=0.0)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--stall", type=float, default=STALL, help="give up after so long idle")
    args = parser.parse_args(argv)

    import importlib

    from sqlalchemy import create_engine

    import gen_durable as durable
    from benchmarks.common import SERVICE_CONNECTIONS
    from benchmarks.measure import Finished, SqlCounter

    durable.configure_schema(args.schema)
    for module in MODULES:
        importlib.import_module(module)
    queues = {q: int(c) for q, _, c in (p.partition("=") for p in args.queues.split(","))}
    size = sum(queues.values()) + len(queues) + SERVICE_CONNECTIONS + 4
    engine = create_engine(args.url, pool_size=size, max_overflow=0)
    counter = SqlCounter(engine)
    finished = Finished([f for f in args.fsms.split(",") if f])
    finished.expect(args.expect or 2**62)
    runner = durable.Runner(
        engine,
        queues=queues,
        observer=finished,
        poll_interval=args.poll_interval,
        gc_interval=3600.0,
        check_schema=False,  # installed by the bench
    )
    runner.start()
    try:
        if runner.listener is not None and not runner.listener.connected.wait(30):
            raise TimeoutError("the Runner's LISTEN connection did not come up")
        say(event="ready", pid=os.getpid())
        if sys.stdin.readline().strip() != "go":
            return 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        say(
            event="go",
            cpu_s=usage.ru_utime + usage.ru_stime,
            driver=counter.snapshot(),
            threads=cpu.thread_cpu(),
        )
        if args.expect:
            end, steps, done, drained = finished.wait(args.window, stall=args.stall)
        else:
            sys.stdin.readline()  # "stop" (or the parent is gone)
            end, steps, done, drained = finished.wait(0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        say(
            event="done",
            cpu_s=usage.ru_utime + usage.ru_stime,
            end=end,
            steps=steps,
            finished=done,
            drained=drained,
            stalled=finished.stalled,
            driver=counter.snapshot(),
            threads=cpu.thread_cpu(),
        )
    finally:
        runner.stop(grace=10.0)
        engine.dispose()
    return 0


if __name__ == "__main__":
    from benchmarks.proc import child as _child  # the module's own globals, not __main__'s

    raise SystemExit(_child())
