"""A pick loop hands claimed rows out while the claim's COMMIT travels, except rows that
got a new signal pack: a pack must be recorded before a step sees it (the same pack comes
back on every re-run), so those wait for the COMMIT.

Whether the claim had committed when the rows were handed out is read from another
connection at that moment: before the COMMIT it still sees the rows unleased.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Job, testing
from gen_durable.runtime import claiming
from gen_durable.runtime.steps import Claimed


class Quick(Job):
    name = "delivery.Quick"

    def perform(self, args: Any) -> None:
        return None


class Waiter(FSM):
    name = "delivery.Waiter"
    steps = ("start", "resume")

    def start(self, ctx: durable.Context) -> Await:
        return Await("go", then="resume")

    def resume(self, ctx: durable.Context) -> Done:
        return Done()


def _running_seen_from_outside(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'running'")
            ).scalar_one()
        )


def _claim(engine: Engine, fsm: str, limit: int) -> tuple[list[Claimed], list[int]]:
    """Claim with a deliver callback; returns the rows and, per delivery, how many rows
    another connection saw running at that moment."""
    seen: list[int] = []
    got: list[Claimed] = []

    def deliver(rows: list[Claimed]) -> None:
        got.extend(rows)
        seen.append(_running_seen_from_outside(engine))

    claiming.claim(engine, "default", [fsm], limit, "delivery", 30, deliver)
    return got, seen


def test_rows_without_a_new_pack_are_handed_out_before_the_claim_commits(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Quick.new() for _ in range(3)])
    rows, seen = _claim(engine, Quick.name, 10)
    assert len(rows) == 3
    assert seen == [0], "handed out after the COMMIT: a round trip later than needed"
    assert _running_seen_from_outside(engine) == 3


def test_rows_with_a_new_signal_pack_wait_for_the_claims_commit(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Waiter)
    testing.drain(engine, fsms=[Waiter], max_steps=1)  # parks on Await("go")
    with Session(engine) as s, s.begin():
        durable.signal(s, iid, "go")
    rows, seen = _claim(engine, Waiter.name, 10)
    assert [r.id for r in rows] == [iid] and [s.name for s in rows[0].awaited] == ["go"]
    assert seen == [1], "a step saw a pack whose record had not committed"
