"""Version 1 of the FSM the upgrade tests deploy: the code before the change.

The tests and the runner processes import this module or :mod:`upgrades.signup_v2` (the
same registry names) to play the old and the new deploy.
"""

from __future__ import annotations

import attrs

import gen_durable as durable
from gen_durable import FSM, Await, Done, Next


class Signup(FSM):
    """Wait for a signup's approval, review it, finish."""

    name = "upg.Signup"
    steps = ("start", "review", "finish")

    @attrs.define
    class State:
        email: str

    def start(self, ctx: durable.Context) -> Await:
        return Await("approve", then="review")

    def review(self, ctx: durable.Context) -> Next:
        return Next("finish")

    def finish(self, ctx: durable.Context) -> Done:
        return Done({"email": ctx.state.email, "by": "v1"})
