"""A step's ``done`` callback is told exactly once, even when it raises: what it raises is
logged, never taken for the step's own error (the pick loop would then count the step's
end twice)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job
from gen_durable.runtime import claiming
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.inflight import Inflight
from gen_durable.runtime.steps import StepReport
from gen_durable.testing import _InlineCommitter


class Plain(Job):
    name = "done_once.Plain"

    def perform(self, args: Any) -> None:
        return None


def test_a_done_callback_that_raises_is_told_once(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.insert(s, Plain)
    executor = Executor(engine, _InlineCommitter(engine), Inflight(), on_committed=lambda c: None)
    [claimed] = claiming.claim(engine, "default", [Plain.name], 1, "done-once", 30)
    told: list[tuple[StepReport | None, BaseException | None]] = []

    def done(report: StepReport | None, error: BaseException | None) -> None:
        told.append((report, error))
        raise RuntimeError("the callback's own bug")

    executor.execute(claimed, executor.lease_for(claimed), done)
    assert len(told) == 1, told
    report, error = told[0]
    assert error is None and report is not None and report.committed
