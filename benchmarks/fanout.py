"""Fan-out and join: the cost of running N no-op children under one parent and joining
them, against running N independent no-op jobs on the same runner configuration.

    python -m benchmarks.fanout --dsn postgresql://user@host/db [--sizes 1,100,10000]

Both sides insert N rows and run N no-op steps; the fan-out side also runs the parent's
two steps, inserts the children in the parent's commit, counts every child against the
parent and loads the N children for the join. Timing runs from just before the insert
(of the parent, or of the N jobs with one ``insert_all``) until the last commit (the
join, or the N-th job), with the Runner already started. Each size runs ``--repeat``
times; medians are reported, and ``overhead`` is fan-out / jobs - 1.

Everything happens in a schema of its own (``--schema``, default ``gd_bench_fanout``),
created for the run and dropped afterwards unless ``--keep``. Prints one JSON line per
run and per size, then a table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Runner, Spawn
from gen_durable.store import schema


class Noop(Job):
    name = "bench.fanout.Noop"

    def perform(self, args: Any) -> None:
        return None


class Fan(FSM):
    name = "bench.fanout.Fan"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        return Spawn([Noop.new() for _ in range(ctx.state["n"])], then="join")

    def join(self, ctx: durable.Context) -> Done:
        return Done(sum(c.status == "done" for c in ctx.children))


class Finish:
    """Counts committed finishing steps seen by the observer; signals at a target."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._want: tuple[str, int] = ("", 0)
        self._seen = 0
        self.at = 0.0

    def expect(self, fsm: str, count: int) -> None:
        with self._lock:
            self._want, self._seen = (fsm, count), 0
            self._event.clear()

    def __call__(self, report: durable.StepReport) -> None:
        if not report.committed or not report.decision.finished:
            return
        with self._lock:
            if report.fsm != self._want[0]:
                return
            self._seen += 1
            if self._seen == self._want[1]:
                self.at = time.perf_counter()
                self._event.set()

    def wait(self, timeout: float) -> float:
        if not self._event.wait(timeout):
            raise TimeoutError(f"not finished within {timeout}s")
        return self.at


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URI as a SQLAlchemy URL using psycopg 3 (SQLAlchemy URLs pass through)."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def reset(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f'TRUNCATE "{name}".gd_instances, "{name}".gd_signals'))


def run_jobs(engine: Engine, finish: Finish, n: int) -> float:
    finish.expect(Noop.name, n)
    started = time.perf_counter()
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Noop.new() for _ in range(n)])
    return finish.wait(600) - started


def run_fanout(engine: Engine, finish: Finish, n: int) -> float:
    finish.expect(Fan.name, 1)
    started = time.perf_counter()
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Fan, state={"n": n})
    elapsed = finish.wait(600) - started
    with Session(engine) as s:
        assert durable.get(s, iid).result == n, "the join saw every child done"
    return elapsed


MODES: dict[str, Callable[[Engine, Finish, int], float]] = {
    "jobs": run_jobs,
    "fanout": run_fanout,
}


def measure(engine: Engine, args: argparse.Namespace, n: int) -> dict[str, list[float]]:
    """Run both modes ``--repeat`` times, alternating which goes first (so that a change
    in background load falls on both), each on empty tables and a fresh Runner."""
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for attempt in range(args.repeat):
        order = list(MODES) if attempt % 2 == 0 else list(reversed(MODES))
        for mode in order:
            reset(engine, args.schema)
            finish = Finish()
            with Runner(
                engine,
                queues={"default": args.concurrency},
                observer=finish,
                poll_interval=args.poll_interval,
                gc_interval=3600,
            ):
                seconds = MODES[mode](engine, finish, n)
            times[mode].append(seconds)
            emit({"kind": "run", "mode": mode, "n": n, "run": attempt + 1, "seconds": seconds})
    return times


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fanout", description=__doc__)
    parser.add_argument("--dsn", required=True, help="libpq URI or SQLAlchemy URL")
    parser.add_argument("--sizes", default="1,10,100,1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--schema", default="gd_bench_fanout")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", args.schema):
        parser.error("--schema must be a lower-case identifier")

    durable.configure_schema(args.schema)
    engine = create_engine(
        sqlalchemy_url(args.dsn), pool_size=args.concurrency + 10, max_overflow=10
    )
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = :s"), {"s": args.schema}
        ).scalar_one()
    if found:
        parser.error(
            f"schema {args.schema!r} exists; the benchmark empties its tables: pick another"
        )
    schema.install(engine, args.schema)
    with engine.connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar_one()
    emit(
        {
            "kind": "config",
            "server_version": server,
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "python": sys.version.split()[0],
        }
    )
    rows = []
    try:
        for n in sizes:
            times = measure(engine, args, n)
            jobs, fan = statistics.median(times["jobs"]), statistics.median(times["fanout"])
            row = {
                "kind": "median",
                "n": n,
                "jobs_seconds": round(jobs, 4),
                "fanout_seconds": round(fan, 4),
                "ratio": round(fan / jobs, 3),
                "overhead": round(fan / jobs - 1, 3),
                "fanout_per_child_ms": round(1000 * fan / n, 3),
            }
            rows.append(row)
            emit(row)
    finally:
        if not args.keep:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE'))
        engine.dispose()
    print()
    print(f"{'n':>7} {'jobs s':>9} {'fan-out s':>10} {'ratio':>7} {'overhead':>9}")
    for row in rows:
        print(
            f"{row['n']:>7} {row['jobs_seconds']:>9.3f} {row['fanout_seconds']:>10.3f} "
            f"{row['ratio']:>7.3f} {row['overhead']:>+9.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
