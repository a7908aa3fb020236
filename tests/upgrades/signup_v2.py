"""Version 2 of the upgrade tests' FSM: a field added (state version 2), the step
``review`` renamed ``check`` (an alias keeps old rows running), ``finish`` split in two.

An email containing ``"broken"`` makes the upgrade function raise (a failing upgrade).
"""

from __future__ import annotations

from typing import Any

import attrs

import gen_durable as durable
from gen_durable import FSM, Await, Done, Next, upgrades_state


class Signup(FSM):
    """Review a signup, wait for its approval, finish and greet."""

    name = "upg.Signup"
    steps = ("start", "check", "finish", "greet")
    state_version = 2
    step_aliases = {"review": "check"}

    @attrs.define
    class State:
        email: str
        handle: str

    @upgrades_state(from_version=1)
    def add_handle(data: Any) -> Any:
        if "broken" in data["email"]:
            raise ValueError(f"cannot derive a handle from {data['email']!r}")
        return {**data, "handle": data["email"].split("@")[0]}

    def start(self, ctx: durable.Context) -> Await:
        return Await("approve", then="check")

    def check(self, ctx: durable.Context) -> Next:
        return Next("finish")

    def finish(self, ctx: durable.Context) -> Next:
        return Next("greet")

    def greet(self, ctx: durable.Context) -> Done:
        return Done({"email": ctx.state.email, "handle": ctx.state.handle, "by": "v2"})
