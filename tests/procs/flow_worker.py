"""A runner process for the flow-control tests: ``python -m procs.flow_worker DB_URL [options]``.

Its classes have fixed registry names so that the test process (which inserts and checks)
and the worker processes (which run) agree on them. The evidence lives in the database,
in database time:

- ``flow_runs``: a ``start`` row when a step begins and an ``end`` row when it returns,
  written outside any transaction (a run that is killed still counts);
- ``chaos_effects`` (the chaos suite's table): one row per committed step, written
  through ``ctx.session`` under a primary key of (instance, version), so it commits with
  the transition, once, and names the run (attempt, process) that committed;
- ``flow_status``: a trigger logs every status change of an instance — a claim is a change
  to ``running``, with the claim transaction's start (``tx_at``, the time its rate-limit
  bucket was refilled to) and the moment of the change (``at``).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from chaos.flows import SETUP as CHAOS_SETUP
from chaos.flows import Recorder, record_effect
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

import gen_durable as durable
from gen_durable import FSM, Cron, Done, Job, Next, RateLimit, Spawn
from gen_durable.runtime.notify import libpq_dsn

SETUP = """
CREATE TABLE IF NOT EXISTS flow_runs (
    id bigserial PRIMARY KEY, event text NOT NULL, instance_id bigint NOT NULL,
    version int NOT NULL, attempt int NOT NULL, fsm text NOT NULL, step text NOT NULL,
    key text, weight float, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS flow_status (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, fsm text NOT NULL,
    version int NOT NULL, attempt int NOT NULL, old text NOT NULL, new text NOT NULL,
    concurrency_key text, concurrency_limit int, rate_key text, rate_weight float,
    owner text, error_type text,
    tx_at timestamptz NOT NULL DEFAULT now(),
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION flow_log_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flow_status (instance_id, fsm, version, attempt, old, new, concurrency_key,
                             concurrency_limit, rate_key, rate_weight, owner, error_type)
    VALUES (NEW.id, NEW.fsm, NEW.version, NEW.attempt, OLD.status, NEW.status,
            NEW.concurrency_key, NEW.concurrency_limit, NEW.rate_key, NEW.rate_weight,
            coalesce(NEW.lease_owner, OLD.lease_owner),
            CASE WHEN NEW.error IS DISTINCT FROM OLD.error THEN NEW.error->>'type' END);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS flow_status ON gen_durable.gd_instances;
CREATE TRIGGER flow_status AFTER UPDATE ON gen_durable.gd_instances FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION flow_log_status();
"""

RATE = RateLimit(20, per=1, burst=10, partition=lambda s: s["p"], weight=lambda s: s.get("w", 1))
"""The bucket of ``Metered.call``: 20 tokens a second per partition, 10 at most at once."""


def setup(engine: Engine) -> None:
    """Create the evidence tables (the chaos suite's too) and the status trigger."""
    with engine.begin() as conn:
        conn.exec_driver_sql(CHAOS_SETUP)
        conn.exec_driver_sql(SETUP)


_recorder: Recorder | None = None


def record(ctx: durable.Context, event: str, key: str | None = None, weight: float = 0) -> None:
    """A ``start`` or ``end`` row for this run, committed at once (database time)."""
    assert _recorder is not None, "set by main()"
    _recorder.execute(
        "INSERT INTO flow_runs (event, instance_id, version, attempt, fsm, step, key, weight, "
        "pid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            event,
            ctx.instance_id,
            ctx.version,
            ctx.attempt,
            ctx.fsm,
            ctx.step,
            key,
            weight or None,
            os.getpid(),
        ),
    )


class Metered(FSM):
    """``prep`` is free; ``call`` takes ``w`` tokens of partition ``p``'s bucket."""

    name = "flowproc.Metered"
    steps = ("prep", "call")
    rate_limits = {"call": RATE}
    max_attempts = 50

    def prep(self, ctx: durable.Context) -> Next:
        record_effect(ctx)
        return Next("call")

    def call(self, ctx: durable.Context) -> Done:
        record(ctx, "start", ctx.state["p"], ctx.state.get("w", 1))
        record_effect(ctx)
        time.sleep(ctx.state.get("sleep", 0))
        return Done(ctx.state["p"])


class Keyed(Job):
    """Holds its concurrency key (given at insert, repeated in ``args["key"]``) a while."""

    name = "flowproc.Keyed"
    max_attempts = 50

    def perform(self, args: dict[str, Any], ctx: durable.Context) -> str:
        record(ctx, "start", args["key"])
        record_effect(ctx)
        time.sleep(args.get("sleep", 0))
        record(ctx, "end", args["key"])
        return str(args["key"])


class Task(Job):
    """A plain job of ``args["n"]``: the priority and pause tests order these."""

    name = "flowproc.Task"

    def perform(self, args: dict[str, Any], ctx: durable.Context) -> int:
        record(ctx, "start")
        time.sleep(args.get("sleep", 0))
        record(ctx, "end")
        return int(args["n"])


class Tick(Job):
    """What the every-second cron schedule starts."""

    name = "flowproc.Tick"

    def perform(self, args: Any, ctx: durable.Context) -> None:
        record(ctx, "start")


class Fan(FSM):
    """Spawns keyed and metered children, then joins them once."""

    name = "flowproc.Fan"
    steps = ("spawn", "join")
    max_attempts = 50

    def spawn(self, ctx: durable.Context) -> Spawn:
        record_effect(ctx)
        s = ctx.state
        children = [
            Keyed.new(
                args={"key": key, "sleep": s["sleep"]},
                concurrency_key=key,
                concurrency_limit=s["limit"],
            )
            for key in s["keys"]
        ] + [Metered.new(state={"p": p, "w": 1}) for p in s["partitions"]]
        return Spawn(children, then="join")

    def join(self, ctx: durable.Context) -> Done:
        statuses = sorted(str(c.status) for c in ctx.children)
        record_effect(ctx, statuses)
        return Done(len(ctx.children))


EVERY_SECOND = "* * * * * *"
SCHEDULE = "every-second"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--lease", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--queue", action="append", default=[], help="NAME=CONCURRENCY")
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--cron", action="store_true", help="fire Tick every second")
    parser.add_argument("--leader-ttl", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(process)d %(threadName)s %(message)s"
    )
    queues = {"default": args.concurrency}
    if args.queue:
        queues = {q.split("=")[0]: int(q.split("=")[1]) for q in args.queue}
    url = make_url(args.url).update_query_dict({"application_name": f"gd-flow-{os.getpid()}"})
    engine = create_engine(
        url.render_as_string(hide_password=False),
        pool_size=sum(queues.values()) + len(queues) + 10,
        max_overflow=10,
    )
    global _recorder
    _recorder = Recorder(libpq_dsn(engine))
    schedules = [Cron(EVERY_SECOND, Tick, name=SCHEDULE)] if args.cron else []
    runner = durable.Runner(
        engine,
        queues=queues,
        fsms=[Metered, Keyed, Task, Tick, Fan],
        lease=args.lease,
        poll_interval=args.poll,
        grace=0.5,
        cron=schedules,
        leader_ttl=args.leader_ttl,
    )
    print("ready", flush=True)
    runner.run_forever()


if __name__ == "__main__":
    main()
