"""The workload's classes: every step follows a script stored in the instance's state.

The same code runs in the engine and in the model (:mod:`model.model`): a step reads the
visit of its script at ``ctx.version`` (each committed transition that moves on is one
visit), then

- does the visit's *hiccups* first: ``hiccups[k]`` on the run that finds ``k`` transitions
  already committed at this version (its retries and RateLimited re-runs), ``"raise"`` an
  exception or ``"rl"`` return ``RateLimited``. Counting committed transitions, not
  attempts, makes a run killed before its commit repeat the same action;
- else notes what it saw (its pack and children) in ``state["seen"]`` and returns the
  visit's outcome (``Done`` returns the whole ``seen``).

``on_error`` returns the visit's compensation, if it has one. In the engine a step
first records its run — instance, version, attempt, step, pack, children — in
``model_runs`` on a connection of its own (autocommit: a failed attempt's record stays),
and reads the count of committed transitions in the same statement.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Cancel, Done, Fail, Job, Next, RateLimited, Sleep
from gen_durable import Spawn as SpawnOutcome
from model import records

STEPS = ("start", "s1", "s2", "s3", "s4", "s5")
RATE_LIMITED_FOR = 0.15
"""``retry_after`` of a scripted RateLimited (seconds)."""


class Boom(Exception):
    """A scripted failure."""


class _Evidence:
    """Writes run records on a connection per thread, outside any transaction."""

    SQL = (
        "INSERT INTO model_runs (instance_id, version, attempt, step, pack, children, pid) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING (SELECT count(*) FROM "
        "gen_durable.gd_history h WHERE h.instance_id = %s AND h.version = %s "
        "AND h.kind NOT IN ('timeout', 'lease_expired', 'outside_cancel'))"
    )

    def __init__(self) -> None:
        self.dsn: str | None = None
        self._local = threading.local()

    def record(self, ctx: Any) -> int:
        assert self.dsn is not None, "flows.configure(dsn) before running steps"
        params = (
            ctx.instance_id,
            ctx.version,
            ctx.attempt,
            ctx.step,
            Jsonb([s.id for s in ctx.awaited]),
            Jsonb(summary(ctx.children)),
            os.getpid(),
            ctx.instance_id,
            ctx.version,
        )
        for retry in (True, False):
            conn = getattr(self._local, "conn", None)
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
                    self._local.conn = conn
                row = conn.execute(self.SQL, params).fetchone()
                assert row is not None
                return int(row[0])
            except psycopg.OperationalError:
                self._local.conn = None
                if not retry:
                    raise
        raise AssertionError("unreachable")


EVIDENCE = _Evidence()


def configure(dsn: str) -> None:
    """Where steps record their runs (a libpq DSN); call it before a Runner starts."""
    EVIDENCE.dsn = dsn


def summary(children: Any) -> list[list[Any]]:
    """``ctx.children`` as [status, result, error type]; a running child is "unfinished"."""
    out = []
    for c in children:
        status = getattr(c.status, "value", c.status)
        if status not in ("done", "failed", "cancelled"):
            status = "unfinished"
        error = c.error.get("type") if isinstance(c.error, dict) else None
        if status == "unfinished" and error == "LeaseExpired":
            # A child reaped after a kill and not yet re-run: timing the model cannot
            # know. A lost lease in a run without kills is reported on the child itself.
            error = None
        out.append([status, c.result, error])
    return out


WORK = "GD_MODEL_STEP_SECONDS"
"""How long each step works in the engine after recording its run (default 0): kills then
catch steps in flight."""


def _prior(ctx: Any) -> int:
    if isinstance(ctx, records.Ctx):
        return ctx.prior
    prior = EVIDENCE.record(ctx)
    time.sleep(float(os.environ.get(WORK, "0")))
    return prior


def _visit(script: dict[str, Any], version: int) -> dict[str, Any] | None:
    visits = script["visits"]
    return visits[version] if version < len(visits) else None


def _hiccup(visit: dict[str, Any], prior: int, ctx: Any) -> Any:
    kind = visit["hiccups"][prior]
    if kind == "raise":
        raise Boom(f"version {ctx.version} attempt {ctx.attempt}")
    return RateLimited(retry_after=RATE_LIMITED_FOR)


def _child_spec(spec: dict[str, Any], parent_key: str) -> durable.InsertSpec:
    script = spec["script"]
    key = parent_key if script.get("dup") else script["key"]
    if spec["cls"] == Task.name:
        return Task.new(args=script, correlation_key=key)
    return durable.InsertSpec.build(
        spec["cls"], state={"script": script, "seen": []}, correlation_key=key
    )


def outcome(spec: dict[str, Any], ctx: Any, script: dict[str, Any]) -> Any:
    """The outcome a visit's spec describes."""
    kind = spec["kind"]
    if kind == "next":
        return Next(spec["to"], delay=spec.get("delay") or None)
    if kind == "await":
        return Await(
            *spec["names"],
            then=spec["to"],
            all=spec["all"],
            limit=spec["limit"],
            timeout=spec["timeout"],
            on_timeout=spec["on_timeout"],
        )
    if kind == "sleep":
        return Sleep(spec["seconds"], then=spec["to"])
    if kind == "spawn":
        kids = [_child_spec(c, script["key"]) for c in spec["children"]]
        return SpawnOutcome(kids, then=spec["to"], on_failure=spec["policy"])
    if kind == "done":
        return Done(list(ctx.state["seen"]))
    if kind == "fail":
        return Fail(f"failed at version {ctx.version}")
    assert kind == "cancel", spec
    return Cancel(f"cancelled at version {ctx.version}")


class Scripted(FSM):
    """An FSM whose steps follow ``state["script"]`` (see the module docstring)."""

    abstract = True
    steps = STEPS
    history = "all"

    def step(self, name: str, ctx: Any) -> Any:
        prior = _prior(ctx)
        script = ctx.state["script"]
        visit = _visit(script, ctx.version)
        if visit is None:  # past the script (a retry from outside after Fail or Cancel)
            return Done({"extra": ctx.version})
        if prior < len(visit["hiccups"]):
            return _hiccup(visit, prior, ctx)
        ctx.state["seen"].append(
            [ctx.version, name, [s.id for s in ctx.awaited], summary(ctx.children)]
        )
        return outcome(visit["do"], ctx, script)

    def on_error(self, name: str, error: BaseException, ctx: Any) -> Any:
        visit = _visit(ctx.state["script"], ctx.version)
        compensation = visit and visit.get("on_error")
        if not compensation:
            return None
        ctx.state["seen"].append([ctx.version, name, "compensated", type(error).__name__])
        return outcome(compensation, ctx, ctx.state["script"])


QUICK = Backoff(base=0.02, factor=1.5, max=0.1, jitter=0.0)


class Flow(Scripted):
    name = "model.Flow"
    max_attempts = 4
    backoff = QUICK


class Sturdy(Scripted):
    """More attempts, and a callable backoff long enough for signals to come meanwhile."""

    name = "model.Sturdy"
    max_attempts = 6
    backoff = staticmethod(lambda attempt: 0.25)


class Kid(Scripted):
    """A child FSM (it may spawn children of its own)."""

    name = "model.Kid"
    max_attempts = 4
    backoff = QUICK


class Task(Job):
    """A child job: one visit; its result is its tag and the re-runs it took."""

    name = "model.Task"
    max_attempts = 3
    backoff = QUICK
    history = "all"

    def perform(self, args: Any, ctx: Any) -> Any:
        prior = _prior(ctx)
        visit = args["visits"][0]
        if prior < len(visit["hiccups"]):
            return _hiccup(visit, prior, ctx)
        if visit["do"]["kind"] == "fail":
            return Fail("task failed")
        return {"tag": args["key"], "prior": prior}

    def on_error(self, name: str, error: BaseException, ctx: Any) -> Any:
        compensation = ctx.state["visits"][0].get("on_error")
        if not compensation:
            return None
        return Done({"tag": ctx.state["key"], "compensated": type(error).__name__})


CLASSES = {cls.name: cls for cls in (Flow, Sturdy, Kid, Task)}
TOP = (Flow.name, Sturdy.name)
