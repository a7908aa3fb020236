"""GC: deletes finished instances past retention, with their signals and history."""

from __future__ import annotations

from sqlalchemy import Engine

from gen_durable import events, faults, store
from gen_durable.runtime.service import Service


class GarbageCollector(Service):
    """Every ``interval`` seconds, delete a batch of finished instances older than retention."""

    name = "gc"

    def __init__(
        self, engine: Engine, retention: float, interval: float, batch: int = 1000
    ) -> None:
        super().__init__(interval)
        self._engine = engine
        self._retention = retention
        self._batch = batch
        self.deleted_total = 0

    def run_once(self) -> bool:
        """Delete one batch; True when it was full."""
        with self._engine.begin() as conn:
            deleted = store.maintenance.collect_garbage(conn, self._retention, self._batch, None)
            if faults.active is not None and deleted:
                faults.hit("gc", conn)
        self.deleted_total += deleted
        if deleted:
            events.emit("gc", deleted=deleted, retention=self._retention)
        return deleted >= self._batch
