"""Timers: makes due scheduled rows and timed-out awaits runnable."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from gen_durable import store
from gen_durable.domain.options import HistoryMode
from gen_durable.runtime.maintenance import records
from gen_durable.runtime.service import Service
from gen_durable.store.history import TIMEOUT, Outside


class Scheduler(Service):
    """Every ``interval`` seconds, stage what is due (database time) and wake its queues.

    A timed-out await gets its history row (kind ``timeout``) in the same transaction
    when its class records every transition (``history``: the Runner's default).
    """

    name = "scheduler"

    def __init__(
        self,
        engine: Engine,
        wake: Callable[[Iterable[str]], None],
        interval: float,
        batch: int = 1000,
        history: HistoryMode = "none",
    ) -> None:
        super().__init__(interval)
        self._engine = engine
        self._wake = wake
        self._batch = batch
        self._history = history
        self.staged_total = 0

    def run_once(self) -> bool:
        """Stage one batch; True when the batch was full (more may be due)."""
        with self._engine.begin() as conn:
            staged = store.maintenance.stage_timers(conn, self._batch, None)
            timeouts = [
                Outside(r.id, TIMEOUT, r.awaited_step, True)
                for r in staged
                if r.timed_out and records(r.fsm, TIMEOUT, self._history)
            ]
            store.history.record_outside(conn, timeouts, None)
        queues = [r.queue for r in staged]
        if queues:
            self.staged_total += len(queues)
            self._wake(queues)
        return len(queues) >= self._batch
