"""A claimed row reaches a worker only once its claim has committed.

Regression: rows were handed to workers while the claim's COMMIT was still on its way.
A fast step's transition could then be written by a statement whose snapshot predates
the claim's commit: it saw the row unleased and was fenced out, and the row stayed
``running`` under a lease nobody held any more until the reaper took it back (a 20,000-job
drain on two runner processes stalled for the lease's 30 s with hundreds of such rows).

The check is made where a row is handed out (its lease registered with the executor),
from another connection: the row must already be seen leased there.
"""

from __future__ import annotations

from typing import Any

import pytest
from _support.helpers import wait_until
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, Runner
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.inflight import Lease
from gen_durable.runtime.steps import Claimed


class Swift(Job):
    name = "committed_first.Swift"

    def perform(self, args: Any) -> None:
        return None


def test_rows_are_handed_out_only_after_their_claim_committed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    handed_out = Executor.lease_for

    def lease_for(self: Executor, claimed: Claimed) -> Lease:
        with engine.connect() as conn:
            seen.append(
                conn.execute(
                    text("SELECT status FROM gen_durable.gd_instances WHERE id = :id"),
                    {"id": claimed.id},
                ).scalar_one()
            )
        return handed_out(self, claimed)

    monkeypatch.setattr(Executor, "lease_for", lease_for)
    reports: list[durable.StepReport] = []
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Swift.new() for _ in range(40)])
    with Runner(engine, queues={"default": 4}, observer=reports.append, poll_interval=0.2):
        wait_until(lambda: len(reports) >= 40, timeout=30)
    assert seen and set(seen) == {"running"}, "a row was handed out before its claim committed"
    assert all(r.committed for r in reports), "a step's transition was fenced out"
