"""Classes and schedules for ``gen-durable run``'s options (``--cron``, endpoints, re-runs)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import gen_durable as durable
from gen_durable import FSM, Backoff, Cron, Done, Job, Spawn


class Tick(Job):
    name = "ops.Tick"

    def perform(self, args: dict[str, Any]) -> str:
        return "tick"


def _mark(path: str) -> int:
    """Append this process's pid to ``path``; how many runs it records now."""
    with Path(path).open("a") as marks:
        marks.write(f"{os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


class Slow(Job):
    """Records each run in ``args["marks"]``; the first run then sleeps (a runner killed
    or stopped meanwhile leaves it half done, to run again), later runs return."""

    name = "ops.Slow"

    def perform(self, args: dict[str, Any]) -> str:
        if _mark(args["marks"]) == 1:
            time.sleep(float(args.get("sleep", 120)))
        return "slow"


class Flaky(Job):
    """Raises on its first run, then succeeds."""

    name = "ops.Flaky"
    backoff = Backoff(base=0.01, jitter=0.0)

    def perform(self, args: dict[str, Any]) -> str:
        if _mark(args["marks"]) == 1:
            raise ConnectionError("the payment gateway hung up")
        return "paid"


class Parent(FSM):
    """Spawns three Ticks, then finishes."""

    name = "ops.Parent"
    steps = ("fan_out", "joined")

    def fan_out(self, ctx: durable.Context) -> Spawn:
        return Spawn([Tick.new(args={"n": n}) for n in range(3)], then="joined")

    def joined(self, ctx: durable.Context) -> Done:
        return Done(len(ctx.children))


# A new schedule fires its latest tick within ``grace`` at once: no waiting for a minute.
SCHEDULES = [Cron("* * * * *", Tick, name="ops-tick", grace=120)]
NOT_A_SCHEDULE = 42
