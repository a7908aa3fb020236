"""W7 memory: peak RSS of a process running one Runner at concurrency 50 on a backlog of
no-op jobs, measured in a child process of its own (so that the benchmark's own memory does
not count). The child reports its RSS after its imports (before the Runner starts), the
peak RSS (``ru_maxrss``) once the window closed or the backlog is gone, and the steps run.

The child is this module: ``python -m benchmarks.memory --url URL --schema S ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Bench, Figure, top_up
from benchmarks.output import log

CONCURRENCY = 50


def rss_mb() -> float:
    """The current resident set size of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run(bench: Bench) -> None:
    from benchmarks import jobs

    backlog = jobs.backlog_size(bench)
    log(f"W7: peak RSS of a Runner at concurrency {CONCURRENCY} (a child process)")
    bench.reset()
    top_up(bench, [jobs.Noop.name], jobs.Noop.new, backlog)
    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.memory",
        "--url",
        bench.url,
        "--schema",
        bench.schema,
        "--concurrency",
        str(CONCURRENCY),
        "--backlog",
        str(backlog),
        "--seconds",
        str(bench.options.window),
    ]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the W7 child failed: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    bench.add(
        Figure(
            "W7",
            f"peak RSS, Runner at concurrency {CONCURRENCY}",
            report["peak_rss_mb"],
            "MB",
            clients=CONCURRENCY,
            extra=report,
        )
    )
    bench.reset()


def child(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--backlog", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)

    from sqlalchemy import create_engine

    import gen_durable as durable
    from benchmarks.common import SERVICE_CONNECTIONS
    from benchmarks.jobs import Noop
    from benchmarks.measure import Finished

    durable.configure_schema(args.schema)
    engine = create_engine(
        args.url, pool_size=args.concurrency + 1 + SERVICE_CONNECTIONS + 2, max_overflow=0
    )
    baseline = rss_mb()
    finished = Finished([Noop.name])
    finished.expect(args.backlog)
    started = time.perf_counter()
    with durable.Runner(
        engine,
        queues={"default": args.concurrency},
        observer=finished,
        gc_interval=3600.0,
        check_schema=False,  # installed by the parent moments ago
    ):
        end, steps, _, drained = finished.wait(args.seconds)
        during = rss_mb()
    engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "baseline_rss_mb": round(baseline, 1),
                "rss_at_end_mb": round(during, 1),
                "peak_rss_mb": round(peak, 1),
                "steps": steps,
                "steps_per_s": round(steps / (end - started), 1),
                "drained": drained,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(child())
