"""The benchmark CLI.

    python -m benchmarks run [--dsn postgresql://user@host/db] [--workload W1,W3] [--quick]
    python -m benchmarks plans [--dsn ...] [--rows 1000000]
    python -m benchmarks web [--dsn ...] [--rows 1000000]

``run`` measures the workloads W1-W10 and W1P (see the modules of this package) and, in
the same run and on the same server, calibrates it with pgbench; it prints one JSON line
per figure (and per pgbench sample) on stdout, progress on stderr, then a table. Runners
run in child processes; the throughput rows give their CPU and the server's per step.
Without ``--dsn`` it starts a private embedded PostgreSQL (durable commits on) and deletes
it afterwards. With ``--dsn`` it works in schemas of its own (``--schema``, default
``gd_bench``, and ``<schema>_ref`` for pgbench), created for the run and dropped at the end.

``plans`` prints EXPLAIN (ANALYZE, BUFFERS) of the hot statements on a seeded table.
``web`` prints the server time of the dashboard's pages on a seeded table (benchmarks/web.py).
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

from benchmarks import (
    bigtables,
    children,
    fsms,
    jobs,
    latency,
    memory,
    pickup,
    plans,
    processes,
    waiting,
    web,
)
from benchmarks.calibration import find_pgbench
from benchmarks.common import Bench, Figure, Options
from benchmarks.connection import server
from benchmarks.output import emit, log

WORKLOADS: dict[str, Callable[[Bench], None]] = {
    "W1": jobs.run,
    "W1P": processes.run,
    "W2": fsms.run,
    "W3": latency.run_w3,
    "W4": latency.run_w4,
    "W5": children.run,
    "W7": memory.run,
    "W8": waiting.run,
    "W9": pickup.run_w9,
    "W10": pickup.run_w10,
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


DIGITS = {"ms": 2, "s": 3, "MB": 1}


def table(figures: list[Figure]) -> str:
    head = (
        f"{'':4} {'figure':<50} {'value':>9} {'unit':<7} {'c':>3} {'TPS_ref':>7} {'E':>5} "
        f"{'commit/st':>9} {'stmt/st':>7} {'RT/st':>6} {'WAL B/st':>8} {'HOT':>4} "
        f"{'CPU us/st':>9} {'srv us/st':>9} {'p99 ms':>7} {'vs empty':>8}  target"
    )
    lines = [head, "-" * len(head)]
    order = list(WORKLOADS)
    notes = []
    for f in sorted(figures, key=lambda f: order.index(f.workload)):
        x = f.extra
        lines.append(
            f"{f.workload:4} {f.name[:50]:<50} {_fmt(f.value, DIGITS.get(f.unit, 0)):>9} "
            f"{f.unit:<7} {_fmt(f.clients):>3} {_fmt(f.tps_ref):>7} {_fmt(f.e, 2):>5} "
            f"{_fmt(x.get('commits_per_step'), 3):>9} {_fmt(x.get('statements_per_step'), 2):>7} "
            f"{_fmt(x.get('round_trips_per_step'), 2):>6} "
            f"{_fmt(x.get('wal_bytes_per_step')):>8} {_fmt(x.get('hot_ratio'), 2):>4} "
            f"{_fmt(x.get('runner_cpu_us_per_step')):>9} "
            f"{_fmt(x.get('server_cpu_us_per_step')):>9} "
            f"{_fmt(x.get('p99_ms'), 2):>7} {_fmt(x.get('ratio_to_empty'), 2):>8}  "
            f"{x.get('target', '')}"
        )
        for key in ("skipped", "note"):
            if key in x:
                notes.append(f"{f.workload} {f.name}: {key} - {x[key]}")
    return "\n".join([*lines, "", *notes] if notes else lines)


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
        steps=args.steps or (2_000 if args.quick else 20_000),
        pickup_seconds=args.pickup_seconds or (4.0 if args.quick else 20.0),
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
                    "steps": options.steps,
                    "pickup_s": options.pickup_seconds,
                    "postmaster_pid": bench.postmaster,
                    "postmaster": bench.postmaster_note,
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
    print(
        f"CPUs: {os.cpu_count()}. CPU us/st: the Runner process(es), srv us/st: every process "
        f"of the server (postmaster pid {bench.postmaster or 'NONE'}: {bench.postmaster_note})"
    )
    print(f"total {elapsed:.0f} s")
    return 0


def cmd_plans(args: argparse.Namespace) -> int:
    with server(args.dsn) as (url, _):
        print(plans.report(url, args.schema, args.rows, args.analyze))
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    with server(args.dsn) as (url, _):
        print(web.report(url, args.schema, args.rows, args.repeat))
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
    run.add_argument(
        "--quick", action="store_true", help="small counts, one run of W1P and W10 (minutes)"
    )
    run.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    run.add_argument("--window", type=float, help="seconds a throughput run lasts at most")
    run.add_argument(
        "--steps",
        type=int,
        help="steps each counted run drains: W1 c=10, W1P, W2, W6, W8 (20,000; quick 2,000)",
    )
    run.add_argument(
        "--pickup-seconds", type=float, help="seconds each W10 run inserts for (20; quick 4)"
    )
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

    wb = sub.add_parser("web", help="server time of the dashboard's pages on a big table")
    wb.add_argument("--dsn", help="libpq URI or SQLAlchemy URL (default: embedded server)")
    wb.add_argument("--rows", type=int, default=1_000_000, help="instances to seed")
    wb.add_argument("--repeat", type=int, default=30, help="requests per page")
    wb.add_argument("--schema", default="gd_bench_web", help="schema to create and drop")
    wb.set_defaults(func=cmd_web)

    args = parser.parse_args(argv)
    if args.command == "run" and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.command == "run" and args.steps is not None and args.steps < 10:
        parser.error("--steps must be >= 10")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,50}", args.schema):
        parser.error("--schema must be a lower-case identifier")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
