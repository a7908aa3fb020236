"""Version 3 of the upgrade tests' FSM: the alias for ``review`` dropped (a row still
there is stranded), and the upgrade from version 1 fixed for every email."""

from __future__ import annotations

from typing import Any

import attrs

import gen_durable as durable
from gen_durable import FSM, Await, Done, Next, upgrades_state


class Signup(FSM):
    """Version 2's steps without the alias; an upgrade that never raises."""

    name = "upg.Signup"
    steps = ("start", "check", "finish", "greet")
    state_version = 2

    @attrs.define
    class State:
        email: str
        handle: str

    @upgrades_state(from_version=1)
    def add_handle(data: Any) -> Any:
        return {**data, "handle": data["email"].split("@")[0].replace("broken", "fixed")}

    def start(self, ctx: durable.Context) -> Await:
        return Await("approve", then="check")

    def check(self, ctx: durable.Context) -> Next:
        return Next("finish")

    def finish(self, ctx: durable.Context) -> Next:
        return Next("greet")

    def greet(self, ctx: durable.Context) -> Done:
        return Done({"email": ctx.state.email, "handle": ctx.state.handle, "by": "v3"})
