"""The benchmark CLI.

    python -m benchmarks run [--dsn postgresql://user@host/db] [--workload W1,W3] [--quick]
    python -m benchmarks plans [--dsn ...] [--rows 1000000]

``run`` measures the workloads W1-W8 (see the modules of this package) and, in the same
run and on the same server, calibrates it with pgbench; it prints one JSON line per figure
(and per pgbench sample) on stdout, progress on stderr, then a table. Without ``--dsn`` it
starts a private embedded PostgreSQL (durable commits on) and deletes it afterwards. With
``--dsn`` it works in schemas of its own (``--schema``, default ``gd_bench``, and
``<schema>_ref`` for pgbench), created for the run and dropped at the end.

``plans`` prints EXPLAIN (ANALYZE, BUFFERS) of the hot statements on a seeded table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import bigtables, children, fsms, jobs, latency, memory, plans, waiting
from benchmarks.calibration import find_pgbench
from benchmarks.common import Bench, Figure, Options
from benchmarks.connection import server
from benchmarks.output import emit, log

WORKLOADS: dict[str, Callable[[Bench], None]] = {
    "W1": jobs.run,
    "W2": fsms.run,
    "W3": latency.run_w3,
    "W4": latency.run_w4,
    "W5": children.run,
    "W7": memory.run,
    "W8": waiting.run,
    "W6": bigtables.run,  # last: it seeds two million rows
}


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(figures: list[Figure]) -> str:
    head = (
        f"{'':4} {'figure':<52} {'value':>10} {'unit':<7} {'c':>3} {'TPS_ref':>8} {'E':>6} "
        f"{'commit/st':>9} {'stmt/st':>7} {'RT/st':>6} {'WAL B/st':>8} {'HOT':>5} {'p99 ms':>7} "
        f"{'vs empty':>8}"
    )
    lines = [head, "-" * len(head)]
    for f in sorted(figures, key=lambda f: f.workload):
        x = f.extra
        digits = 2 if f.unit == "ms" else 1 if f.unit == "MB" else 0
        lines.append(
            f"{f.workload:4} {f.name[:52]:<52} {_fmt(f.value, digits):>10} {f.unit:<7} "
            f"{_fmt(f.clients):>3} {_fmt(f.tps_ref):>8} {_fmt(f.e, 2):>6} "
            f"{_fmt(x.get('commits_per_step'), 3):>9} {_fmt(x.get('statements_per_step'), 2):>7} "
            f"{_fmt(x.get('round_trips_per_step'), 2):>6} "
            f"{_fmt(x.get('wal_bytes_per_step')):>8} {_fmt(x.get('hot_ratio'), 2):>5} "
            f"{_fmt(x.get('p99_ms'), 2):>7} {_fmt(x.get('ratio_to_empty'), 2):>8}"
        )
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    chosen = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {sorted(WORKLOADS)}")
    order = [w for w in WORKLOADS if w in chosen]
    options = Options(
        quick=args.quick,
        repeat=args.repeat,
        pgbench_seconds=args.pgbench_seconds or (1.0 if args.quick else 3.0),
        window=args.window or (2.0 if args.quick else 8.0),
    )
    pgbench = find_pgbench(args.pgbench)
    if pgbench is None:
        log("no pgbench found (--pgbench): E and TPS_ref are left out")
    started = time.perf_counter()
    with server(args.dsn) as (url, where):
        bench = Bench(url, args.schema, options, pgbench)
        bench.install()
        try:
            emit(
                {
                    "kind": "config",
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
                    "server": where,
                    "settings": bench.server_info(),
                    "machine": machine(),
                    "pgbench": pgbench,
                    "workloads": order,
                    "quick": options.quick,
                    "repeat": options.repeat,
                    "window_s": options.window,
                    "pgbench_s": options.pgbench_seconds,
                }
            )
            for name in order:
                began = time.perf_counter()
                WORKLOADS[name](bench)
                took = time.perf_counter() - began
                emit({"kind": "workload", "workload": name, "seconds": round(took, 1)})
                log(f"{name} took {took:.0f} s")
            for clients, ref in bench.calibration.summary().items():
                emit({"kind": "tps_ref", "clients": clients, **ref})
        finally:
            if args.keep:
                log(f"kept schemas {bench.schema} and {bench.ref_schema}")
            else:
                bench.drop()
    elapsed = time.perf_counter() - started
    emit({"kind": "done", "seconds": round(elapsed, 1)})
    print()
    print(table(bench.figures))
    refs = ", ".join(
        f"{c} client{'s' if c > 1 else ''}: {r['tps_ref']:,.0f}"
        for c, r in bench.calibration.summary().items()
    )
    print(f"\nTPS_ref (pgbench -M prepared, single-row UPDATE, median): {refs or '-'}")
    print(f"total {elapsed:.0f} s")
    return 0


def cmd_plans(args: argparse.Namespace) -> int:
    with server(args.dsn) as (url, _):
        print(plans.report(url, args.schema, args.rows, args.analyze))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="measure the workloads")
    run.add_argument("--dsn", help="libpq URI or SQLAlchemy URL (default: embedded server)")
    run.add_argument("--workload", default=",".join(WORKLOADS), help="e.g. W1,W3")
    run.add_argument("--quick", action="store_true", help="small counts (about two minutes)")
    run.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    run.add_argument("--window", type=float, help="seconds a throughput run lasts at most")
    run.add_argument("--pgbench", help="the pgbench binary (default: found)")
    run.add_argument("--pgbench-seconds", type=float, help="length of one pgbench sample")
    run.add_argument("--schema", default="gd_bench", help="schema to create and drop")
    run.add_argument("--keep", action="store_true", help="keep the schemas afterwards")
    run.set_defaults(func=cmd_run)

    pl = sub.add_parser("plans", help="EXPLAIN the hot statements on a seeded table")
    pl.add_argument("--dsn", help="libpq URI or SQLAlchemy URL (default: embedded server)")
    pl.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="finished rows, and as many future-scheduled rows, to seed",
    )
    pl.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="plain EXPLAIN (no ANALYZE, BUFFERS)",
    )
    pl.add_argument("--schema", default="gd_bench_plans", help="schema to create and drop")
    pl.set_defaults(func=cmd_plans)

    args = parser.parse_args(argv)
    if args.command == "run" and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", args.schema):
        parser.error("--schema must be a lower-case identifier")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
