"""The chaos workload: a five-step flow that can await a signal and spawn children.

Shared by the test process (which inserts and checks) and the runner processes (which run
steps), so the registry names are fixed. Every step leaves three kinds of evidence:

- ``chaos_runs``: one row per run, written outside any transaction before the step does
  anything else (a run that is killed still counts);
- ``chaos_effects``: one row per committed step, written through ``ctx.session`` (so it
  commits with the transition or not at all) under a primary key of (instance, version):
  a second commit of one transition could not write its row;
- ``state.trail``: "step:version:attempt:pid", appended by the step and committed with its
  transition — the authoritative record of which run committed each version.

With ``grouped`` set, the odd steps do not open ``ctx.session`` (their transitions go
through the grouped committer) and leave only the trail.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import attrs
import psycopg
from sqlalchemy import text

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Job, Next, Spawn

SETUP = """
CREATE TABLE IF NOT EXISTS chaos_runs (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, version int NOT NULL,
    step text NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS chaos_runs_instance ON chaos_runs (instance_id, version);
CREATE TABLE IF NOT EXISTS chaos_effects (
    instance_id bigint NOT NULL, version int NOT NULL, step text NOT NULL,
    attempt int NOT NULL, pid int NOT NULL, info jsonb,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (instance_id, version));
-- Every time a claim ends without its transition landing (the reaper returned an
-- expired lease, a claim was released at shutdown, a failed attempt was committed).
CREATE TABLE IF NOT EXISTS chaos_exits (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, version int NOT NULL,
    attempt int NOT NULL, owner text, status text NOT NULL, reaped bool NOT NULL,
    released bool NOT NULL, error_type text,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION chaos_log_exit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_exits (instance_id, version, attempt, owner, status, reaped,
                             released, error_type)
    VALUES (OLD.id, OLD.version, OLD.attempt, OLD.lease_owner, NEW.status,
            NEW.error->>'type' = 'LeaseExpired' AND NEW.error IS DISTINCT FROM OLD.error,
            NEW.attempt < OLD.attempt, NEW.error->>'type');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS chaos_exit ON gen_durable.gd_instances;
CREATE TRIGGER chaos_exit AFTER UPDATE ON gen_durable.gd_instances FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND NEW.version = OLD.version)
    EXECUTE FUNCTION chaos_log_exit();
-- What garbage collection deleted, and whether it was allowed to.
CREATE TABLE IF NOT EXISTS chaos_deleted (
    instance_id bigint PRIMARY KEY, fsm text, status text, finished bool NOT NULL,
    parent_id bigint, parent_unfinished bool NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION chaos_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_deleted (instance_id, fsm, status, finished, parent_id,
                               parent_unfinished)
    VALUES (OLD.id, OLD.fsm, OLD.status, OLD.finished_at IS NOT NULL, OLD.parent_id,
            EXISTS (SELECT 1 FROM gen_durable.gd_instances p
                    WHERE p.id = OLD.parent_id AND p.finished_at IS NULL));
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS chaos_delete ON gen_durable.gd_instances;
CREATE TRIGGER chaos_delete AFTER DELETE ON gen_durable.gd_instances FOR EACH ROW
    EXECUTE FUNCTION chaos_log_delete();
CREATE TABLE IF NOT EXISTS chaos_deleted_signals (
    signal_id bigint PRIMARY KEY, instance_id bigint NOT NULL, consumed bool NOT NULL);
CREATE OR REPLACE FUNCTION chaos_log_signal_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_deleted_signals VALUES (OLD.id, OLD.instance_id,
                                              OLD.consumed_at IS NOT NULL);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS chaos_signal_delete ON gen_durable.gd_signals;
CREATE TRIGGER chaos_signal_delete AFTER DELETE ON gen_durable.gd_signals FOR EACH ROW
    EXECUTE FUNCTION chaos_log_signal_delete();
-- Commits a runner reported as fenced out (the observer of each runner process).
CREATE TABLE IF NOT EXISTS chaos_fenced (
    instance_id bigint NOT NULL, version int NOT NULL, step text NOT NULL,
    attempt int NOT NULL, pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
"""

WORK_SECONDS = "GD_CHAOS_STEP_SECONDS"
"""How long each step works (seconds; default 0.01), read by the runner process."""
SLOW_STEPS = "GD_CHAOS_SLOW_STEPS"
"""Comma-separated steps that work that long (default: every step)."""

STEPS = ("s0", "s1", "s2", "s3", "s4")


class Recorder:
    """Writes run records on a connection of its own per thread, outside any transaction.

    It reconnects when the server dropped it (restarts, terminated backends); a run that
    cannot be recorded raises, so the step fails before it does anything.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._local = threading.local()

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        for attempt in range(2):
            conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                    self._local.conn = conn
                conn.execute(sql, params)
                return
            except psycopg.OperationalError:
                self._local.conn = None
                if attempt:
                    raise


_recorder: Recorder | None = None


def configure(dsn: str) -> None:
    """Called by a runner process before it starts."""
    global _recorder
    _recorder = Recorder(dsn)


def record_run(ctx: durable.Context) -> None:
    assert _recorder is not None, "configure() first"
    _recorder.execute(
        "INSERT INTO chaos_runs (instance_id, version, step, attempt, pid) "
        "VALUES (%s, %s, %s, %s, %s)",
        (ctx.instance_id, ctx.version, ctx.step, ctx.attempt, os.getpid()),
    )


def record_fenced(report: durable.StepReport) -> None:
    """A commit the runtime refused (a flow's step ``sK`` runs at version K)."""
    assert _recorder is not None
    version = STEPS.index(report.step) if report.step in STEPS else 0
    _recorder.execute(
        "INSERT INTO chaos_fenced (instance_id, version, step, attempt, pid) "
        "VALUES (%s, %s, %s, %s, %s)",
        (report.instance_id, version, report.step, report.attempt, os.getpid()),
    )


def record_effect(ctx: durable.Context, info: Any = None) -> None:
    ctx.session.execute(
        text(
            "INSERT INTO chaos_effects (instance_id, version, step, attempt, pid, info) "
            "VALUES (:i, :v, :s, :a, :p, CAST(:info AS jsonb))"
        ),
        {
            "i": ctx.instance_id,
            "v": ctx.version,
            "s": ctx.step,
            "a": ctx.attempt,
            "p": os.getpid(),
            "info": json.dumps(info),
        },
    )


def work(step: str) -> None:
    seconds = float(os.environ.get(WORK_SECONDS, "0.01"))
    slow = os.environ.get(SLOW_STEPS)
    if slow and step not in slow.split(","):
        seconds = 0.01
    if seconds > 0:
        time.sleep(seconds)


@attrs.define
class FlowState:
    n: int
    wait: bool = False
    """s1 parks on the signal "go"; s2 checks it got its own."""
    spawn: int = 0
    """s3 spawns this many Leaf children; s4 checks they all finished."""
    grouped: bool = True
    trail: list[str] = attrs.Factory(list)


class Flow(FSM):
    """Five steps, each committed once per version whatever is killed in between."""

    name = "chaos.Flow"
    steps = STEPS
    state_type = FlowState
    max_attempts = 50
    backoff = Backoff(base=0.05, factor=2.0, max=1.0)

    def step(self, name: str, ctx: durable.Context) -> Any:
        record_run(ctx)
        state: FlowState = ctx.state
        info: Any = None
        outcome: Any
        if name == "s0":
            outcome = Next("s1")
        elif name == "s1":
            outcome = Await("go", then="s2") if state.wait else Next("s2")
        elif name == "s2":
            info = [{"id": s.id, "name": s.name, "payload": s.payload} for s in ctx.awaited]
            outcome = Next("s3")
        elif name == "s3":
            children = [Leaf.new(args={"parent": state.n, "k": k}) for k in range(state.spawn)]
            outcome = Spawn(children, then="s4") if children else Next("s4")
        else:
            info = [{"id": c.id, "status": str(c.status), "result": c.result} for c in ctx.children]
            outcome = Done({"n": state.n})
        uses_session = not state.grouped or name in ("s0", "s2", "s4")
        if uses_session:  # before the work: the uncommitted row is held while it runs
            record_effect(ctx, info)
        work(name)
        state.trail.append(f"{name}:{ctx.version}:{ctx.attempt}:{os.getpid()}")
        return outcome


class Leaf(Job):
    """A child: one step, recorded like the flow's."""

    name = "chaos.Leaf"
    max_attempts = 50
    backoff = Backoff(base=0.05, factor=2.0, max=1.0)

    def perform(self, args: Any, ctx: durable.Context) -> Any:
        record_run(ctx)
        record_effect(ctx, args)
        work("leaf")
        return {"parent": args["parent"], "k": args["k"], "pid": os.getpid()}


def specs(
    first: int,
    count: int,
    *,
    wait_every: int = 0,
    spawn_every: int = 0,
    children: int = 2,
    grouped: bool = True,
) -> list[Any]:
    """Insert specs for flows ``first .. first+count-1`` (correlation key ``chaos:<n>``)."""
    out = []
    for n in range(first, first + count):
        state = FlowState(
            n=n,
            wait=bool(wait_every) and n % wait_every == 0,
            spawn=children if spawn_every and n % spawn_every == 1 else 0,
            grouped=grouped,
        )
        out.append(Flow.new(state=state, correlation_key=f"chaos:{n}"))
    return out
