"""Classes for the CLI tests: imported by ``gen-durable run --import procs.cli_app``."""

from __future__ import annotations

from typing import Any

import gen_durable as durable
from gen_durable import FSM, Await, Done, Job


class Greet(Job):
    name = "cli.Greet"

    def perform(self, args: dict[str, Any]) -> str:
        return f"hello {args['who']}"


class Gate(FSM):
    name = "cli.Gate"
    steps = ("wait", "open")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("open", then="open")

    def open(self, ctx: durable.Context) -> Done:
        return Done(ctx.awaited[0].payload)
