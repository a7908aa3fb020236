"""Timers: makes due scheduled rows and timed-out awaits runnable."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from gen_durable import store
from gen_durable.runtime.service import Service


class Scheduler(Service):
    """Every ``interval`` seconds, stage what is due (database time) and wake its queues."""

    name = "scheduler"

    def __init__(
        self,
        engine: Engine,
        wake: Callable[[Iterable[str]], None],
        interval: float,
        batch: int = 1000,
    ) -> None:
        super().__init__(interval)
        self._engine = engine
        self._wake = wake
        self._batch = batch
        self.staged_total = 0

    def run_once(self) -> bool:
        """Stage one batch; True when the batch was full (more may be due)."""
        with self._engine.begin() as conn:
            queues = store.maintenance.stage_due(conn, self._batch, None)
        if queues:
            self.staged_total += len(queues)
            self._wake(queues)
        return len(queues) >= self._batch
