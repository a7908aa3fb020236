"""A runner process for crash tests: ``python -m tests.procs.worker DB_URL [options]``.

Its classes have fixed registry names so that the test process (which inserts) and the
worker processes (which run) agree on them. Steps record each run in ``gd_test_runs``
outside any transaction (a run that is killed still counts) and their effect in
``gd_test_effects`` through ``ctx.session`` (so it commits with the transition, once).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time

from sqlalchemy import Engine, create_engine, text

import gen_durable as durable
from gen_durable import FSM, Await, Done, Next

SETUP = """
CREATE TABLE IF NOT EXISTS gd_test_runs (
    id bigserial PRIMARY KEY, instance_id bigint, step text, pid int,
    at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS gd_test_effects (
    instance_id bigint, version int, step text, pid int,
    PRIMARY KEY (instance_id, version));
"""


def setup(engine: Engine) -> None:
    """Create the bookkeeping tables the crash tests count in."""
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)


def record_run(ctx: durable.Context, engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(
            text("INSERT INTO gd_test_runs (instance_id, step, pid) VALUES (:i, :s, :p)"),
            {"i": ctx.instance_id, "s": ctx.step, "p": os.getpid()},
        )
        conn.commit()


def record_effect(ctx: durable.Context) -> None:
    ctx.session.execute(
        text(
            "INSERT INTO gd_test_effects (instance_id, version, step, pid) VALUES (:i, :v, :s, :p)"
        ),
        {"i": ctx.instance_id, "v": ctx.version, "s": ctx.step, "p": os.getpid()},
    )


_ENGINE: Engine | None = None


class Slow(FSM):
    """Three steps; ``work`` sleeps long enough to be killed in the middle of it."""

    name = "crash.Slow"
    steps = ("begin", "work", "finish")

    def begin(self, ctx: durable.Context) -> Next:
        assert _ENGINE is not None
        record_run(ctx, _ENGINE)
        record_effect(ctx)
        return Next("work")

    def work(self, ctx: durable.Context) -> Next:
        assert _ENGINE is not None
        record_run(ctx, _ENGINE)
        time.sleep(float(os.environ.get("GD_TEST_WORK_SECONDS", "3")))
        record_effect(ctx)
        return Next("finish")

    def finish(self, ctx: durable.Context) -> Done:
        assert _ENGINE is not None
        record_run(ctx, _ENGINE)
        record_effect(ctx)
        return Done("finished")


class Consumer(FSM):
    """Parks for ``item`` signals; the step that takes them is slow enough to be killed."""

    name = "crash.Consumer"
    steps = ("wait", "take")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("item", then="take")

    def take(self, ctx: durable.Context) -> Done:
        assert _ENGINE is not None
        payloads = [s.payload for s in ctx.awaited]
        with _ENGINE.connect() as conn:
            conn.execute(
                text("INSERT INTO gd_test_runs (instance_id, step, pid) VALUES (:i, :s, :p)"),
                {"i": ctx.instance_id, "s": ",".join(map(str, payloads)), "p": os.getpid()},
            )
            conn.commit()
        time.sleep(float(os.environ.get("GD_TEST_WORK_SECONDS", "3")))
        record_effect(ctx)
        return Done(payloads)


class Poison(FSM):
    """A step that kills its own worker process every time it runs."""

    name = "crash.Poison"
    steps = ("explode",)
    max_attempts = 3

    def explode(self, ctx: durable.Context) -> Done:
        assert _ENGINE is not None
        record_run(ctx, _ENGINE)
        os.kill(os.getpid(), signal.SIGKILL)
        return Done()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    global _ENGINE
    _ENGINE = create_engine(args.url, pool_size=20, max_overflow=10)
    runner = durable.Runner(
        _ENGINE,
        queues={"default": args.concurrency},
        lease=args.lease,
        poll_interval=0.2,
        grace=0.5,
        fsms=[Slow, Poison, Consumer],
    )
    print("ready", flush=True)
    runner.run_forever()


if __name__ == "__main__":
    main()
