"""The Checkout example of the README, end to end: ``make demo``.

insert -> a Runner picks it -> it parks awaiting ``payment_confirmed`` -> a "webhook"
signals it by correlation key -> ``ship`` runs -> done. Uses ``GEN_DURABLE_DSN`` when set,
else a private embedded PostgreSQL that is deleted afterwards.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import attrs
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Runner
from gen_durable.devserver import database_url
from gen_durable.store.schema import install


class Checkout(FSM):
    """Park until the payment webhook fires, then ship."""

    name = "demo.Checkout"
    queue = "checkout"
    steps = ("start", "ship")

    @attrs.define
    class State:
        order: int

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":  # park until the webhook fires, then run "ship"
            return Await("payment_confirmed", then="ship")
        if name == "ship":
            return Done({"order": ctx.state.order, "paid": ctx.awaited[0].payload})
        raise AssertionError(name)


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {message}", flush=True)


def wait_for(engine: Any, key: str, status: str, timeout: float = 30.0) -> durable.InstanceSnapshot:
    deadline = time.monotonic() + timeout
    while True:
        with Session(engine) as s:
            snap = durable.get(s, key)
        if snap.status == status:
            return snap
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {key} did not reach {status!r}; it is {snap.status!r}")
        time.sleep(0.05)


def main() -> int:
    with database_url() as url:
        engine = create_engine(url, pool_size=25)
        install(engine)
        say("schema migrated")

        def on_step(report: durable.StepReport) -> None:
            d = report.decision
            where = {
                "await": f"awaiting {', '.join(d.await_names or ())} (then {d.step})",
                "done": f"done, result {d.result}",
            }.get(d.kind, f"{d.kind} -> {d.step}")
            say(f"order:42  step {report.step!r} (attempt {report.attempt}) -> {where}")

        with Session(engine) as s, s.begin():  # inside the caller's own transaction
            iid = durable.insert(s, Checkout, state={"order": 42}, correlation_key="order:42")
        say(f"inserted Checkout {iid} with correlation key order:42 (status available)")

        with Runner(engine, queues={"default": 10, "checkout": 5}, observer=on_step, grace=5):
            say("runner started")
            wait_for(engine, "order:42", "awaiting")
            say("webhook: payment_confirmed for order:42")
            with Session(engine) as s, s.begin():  # a webhook that only knows the business key
                sent = durable.signal(s, "order:42", "payment_confirmed", {"amount": 100})
            say(f"signal {sent.signal_id} stored for instance {sent.instance_id}")
            final = wait_for(engine, "order:42", "done")
        say(f"runner stopped; order:42 is {final.status} with result {final.result}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
