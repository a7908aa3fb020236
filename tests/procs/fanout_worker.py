"""A runner process for the fan-out tests: ``python -m procs.fanout_worker DB_URL [options]``.

Its classes have fixed registry names so that the test process (which inserts) and the
worker processes (which run) agree on them. Every step records its run in
``gd_test_runs`` outside any transaction (a killed run still counts) and its effect in
``gd_test_effects`` through ``ctx.session`` (committed with the transition, once); the
parent's join step also writes ``gd_test_joins`` through ``ctx.session``.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from sqlalchemy import Engine, create_engine, text

import gen_durable as durable
from gen_durable import FSM, Done, Job, Spawn
from procs.worker import record_effect, record_run

SETUP = """
CREATE TABLE IF NOT EXISTS gd_test_runs (
    id bigserial PRIMARY KEY, instance_id bigint, step text, pid int,
    at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS gd_test_effects (
    instance_id bigint, version int, step text, pid int,
    PRIMARY KEY (instance_id, version));
CREATE TABLE IF NOT EXISTS gd_test_joins (
    id bigserial PRIMARY KEY, instance_id bigint, children int, done int);
"""


def setup(engine: Engine) -> None:
    """Create the bookkeeping tables the fan-out tests count in."""
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)


_ENGINE: Engine | None = None


def _engine() -> Engine:
    assert _ENGINE is not None, "set by main()"
    return _ENGINE


class Gate(Job):
    """A child: waits until wall-clock ``at`` (so that many finish at once), then ``sleep``."""

    name = "fanout.Gate"

    def perform(self, args: dict[str, Any], ctx: durable.Context) -> int:
        record_run(ctx, _engine())
        pause = args.get("at", 0) - time.time()
        if pause > 0:
            time.sleep(pause)
        time.sleep(args.get("sleep", 0))
        record_effect(ctx)
        return int(args["i"])


class Fan(FSM):
    """The parent: spawns ``n`` Gate children, then joins once."""

    name = "fanout.Fan"
    steps = ("spawn", "join")

    def spawn(self, ctx: durable.Context) -> Spawn:
        record_run(ctx, _engine())
        n, at, sleep = ctx.state["n"], ctx.state.get("at", 0), ctx.state.get("sleep", 0)
        time.sleep(ctx.state.get("linger", 0))  # a window to lock the row before the commit
        return Spawn(
            [Gate.new(args={"i": i, "at": at, "sleep": sleep}) for i in range(n)], then="join"
        )

    def join(self, ctx: durable.Context) -> Done:
        record_run(ctx, _engine())
        done = [c for c in ctx.children if c.status == "done"]
        ctx.session.execute(
            text("INSERT INTO gd_test_joins (instance_id, children, done) VALUES (:i, :c, :d)"),
            {"i": ctx.instance_id, "c": len(ctx.children), "d": len(done)},
        )
        record_effect(ctx)
        return Done({"children": len(ctx.children), "sum": sum(c.result for c in done)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global _ENGINE
    _ENGINE = create_engine(args.url, pool_size=args.concurrency + 15, max_overflow=10)
    runner = durable.Runner(
        _ENGINE,
        queues={"default": args.concurrency},
        lease=args.lease,
        poll_interval=0.2,
        grace=0.5,
        fsms=[Fan, Gate],
    )
    print("ready", flush=True)
    runner.run_forever()


if __name__ == "__main__":
    main()
