"""The per-queue pick loop: claim a batch when there are free slots, hand rows to workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from sqlalchemy import Engine

from gen_durable.runtime import claiming
from gen_durable.runtime.executor import Claimed, Executor, StepReport
from gen_durable.runtime.workers import WorkerPool

log = logging.getLogger("gen_durable.runtime")


class Dispatcher:
    """Claims runnable rows of one queue, at most ``concurrency`` in flight.

    It claims when woken (a notification, a local commit, a freed slot while a backlog
    remains) or every ``poll_interval`` seconds — the fallback that needs no NOTIFY.
    """

    def __init__(
        self,
        engine: Engine,
        queue: str,
        concurrency: int,
        executor: Executor,
        pool: WorkerPool,
        *,
        node_id: str,
        fsms: Callable[[], Sequence[str]],
        lease_seconds: float,
        poll_interval: float,
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self._engine = engine
        self._executor = executor
        self._pool = pool
        self._node_id = node_id
        self._fsms = fsms
        self._lease_seconds = lease_seconds
        self._poll_interval = poll_interval
        self._cond = threading.Condition()
        self._running = 0
        self._woken = True
        self._backlog = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.claimed_total = 0

    def start(self) -> None:
        """Start the pick loop."""
        self._thread = threading.Thread(
            target=self._loop, name=f"gd-dispatch-{self.queue}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Claim at the next chance: new work may be runnable in this queue."""
        with self._cond:
            self._woken = True
            self._cond.notify()

    def stop_claiming(self) -> None:
        """Stop claiming new work (in-flight steps continue)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the pick loop to exit."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> int:
        """Steps of this queue in flight."""
        with self._cond:
            return self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no step of this queue is in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._running == 0, timeout)

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(self._should_claim, timeout=self._poll_interval)
                if self._stopping:
                    return
                free = self.concurrency - self._running
                self._woken = False
            if free <= 0:
                continue
            try:
                rows = self._claim(free)
                failures = 0
            except Exception as exc:  # the database may be restarting: back off, retry
                failures += 1
                log.warning("claim on %s failed: %s", self.queue, exc)
                with self._cond:
                    self._cond.wait(min(10.0, 0.1 * 2**failures))
                continue
            with self._cond:
                self._backlog = len(rows) == free
                if self._backlog:
                    self._woken = True
            for row in rows:
                self._submit(row)

    def _should_claim(self) -> bool:
        return self._stopping or (self._woken and self._running < self.concurrency)

    def _claim(self, limit: int) -> list[Claimed]:
        claimed = claiming.claim(
            self._engine, self.queue, self._fsms(), limit, self._node_id, self._lease_seconds
        )
        self.claimed_total += len(claimed)
        return claimed

    def _submit(self, claimed: Claimed) -> None:
        lease = self._executor.lease_for(claimed)
        with self._cond:
            self._running += 1
        future = self._pool.submit(self._executor.run, claimed, lease)
        future.add_done_callback(self._done)

    def _done(self, future: Future[StepReport]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("a step's commit failed; its lease will expire", exc_info=exc)
        with self._cond:
            self._running -= 1
            if self._backlog:
                self._woken = True
            self._cond.notify_all()
