"""The reaper: returns expired leases (crashed or stalled runners) and forgets dead nodes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import Engine

from gen_durable import events, faults, store
from gen_durable.domain.options import HistoryMode
from gen_durable.runtime.maintenance import records
from gen_durable.runtime.service import Service
from gen_durable.store.history import LEASE_EXPIRED, Outside, Rerun

log = logging.getLogger("gen_durable.runtime")


class Reaper(Service):
    """Every ``interval`` seconds, reap expired leases and prune silent nodes.

    An instance failed here (its last attempt's lease lapsed) gets its history row (kind
    ``lease_expired``) when its class records errors (``history``: the Runner's default).
    """

    name = "reaper"

    def __init__(
        self,
        engine: Engine,
        wake: Callable[[Iterable[str]], None],
        interval: float,
        node_ttl: float,
        on_failed: Callable[[list[int]], None] | None = None,
        batch: int = 500,
        history: HistoryMode = "none",
    ) -> None:
        super().__init__(interval)
        self._engine = engine
        self._wake = wake
        self._node_ttl = node_ttl
        self._on_failed = on_failed
        self._batch = batch
        self._history = history
        self.reaped_total = 0

    def run_once(self) -> bool:
        """Reap one batch; True when it was full."""
        with self._engine.begin() as conn:
            rows = store.maintenance.reap(conn, self._batch, None)
            # The steps whose leases lapsed ran (at least in part): say so where `show` looks.
            reruns = [
                Rerun(r.id, r.fsm, r.step, r.version, r.attempt, LEASE_EXPIRED, r.lease_owner, None)
                for r in rows
            ]
            store.history.record_reruns(conn, reruns, None)
            lost = [
                Outside(r.id, LEASE_EXPIRED, None, True)
                for r in rows
                if r.status == "failed" and records(r.fsm, LEASE_EXPIRED, self._history)
            ]
            store.history.record_outside(conn, lost, None)
            if faults.active is not None and rows:
                faults.hit("reaper", conn)
            # A child failed here is counted against its parent in the same transaction.
            failed_children = [
                (r.parent_id, r.id, True)
                for r in rows
                if r.status == "failed" and r.parent_id is not None
            ]
            woken, cancelled = store.children.finish(conn, failed_children, None)
            store.maintenance.prune_nodes(conn, self._node_ttl, None)
            # Last in the transaction (it may wait for a claimer deciding on the key).
            freed = list(store.concurrency.release(conn, [r.concurrency_key for r in rows], None))
            freed += store.concurrency.unstrand(conn, 100, None)
        if freed:
            self._wake([r.queue for r in freed])
        if rows:
            self.reaped_total += len(rows)
            log.info("reaped %d expired lease(s)", len(rows))
            events.emit(
                "reaper.rescue",
                count=len(rows),
                instance_ids=[r.id for r in rows],
                failed_ids=[r.id for r in rows if r.status == "failed"],
            )
            self._wake([r.queue for r in rows if r.status == "available"])
            if woken:
                self._wake([r.queue for r in woken])
            failed = [r.id for r in rows if r.status == "failed"] + [r.id for r in cancelled]
            if failed and self._on_failed is not None:
                self._on_failed(failed)
        return len(rows) >= self._batch
