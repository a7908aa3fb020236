"""The per-queue pick loop: claim a batch when there are free slots, hand rows to workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from sqlalchemy import Engine

from gen_durable.runtime import claiming
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.inflight import Lease
from gen_durable.runtime.steps import Claimed, StepReport
from gen_durable.runtime.workers import WorkerPool

log = logging.getLogger("gen_durable.runtime")


UNCOMMITTED_HEADROOM = 256
"""Claims a queue may hold beyond its concurrency while their transitions wait for the
committer: enough to fill a commit group, few enough that a stalled database does not
gather a large share of a shared backlog in one runner."""


class Dispatcher:
    """Claims runnable rows of one queue, at most ``concurrency`` steps executing.

    A worker is free again as soon as its step returned and its transition was queued
    for the committer; the claim stays held (and counted) until that commit resolves, at
    most ``concurrency + UNCOMMITTED_HEADROOM`` of them. It claims when woken (a
    notification, a local commit, a freed slot while a backlog remains) or every
    ``poll_interval`` seconds — the fallback that needs no NOTIFY.
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
        self._executing = 0
        self._uncommitted = 0
        self._max_uncommitted = concurrency + UNCOMMITTED_HEADROOM
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
        """Claims of this queue in flight: executing, or waiting for their commit."""
        with self._cond:
            return self._uncommitted

    def has_room(self) -> bool:
        """Whether a claim now could take at least one row."""
        with self._cond:
            return self._free() > 0

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no claim of this queue is in flight; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._uncommitted == 0, timeout)

    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                self._cond.wait_for(self._should_claim, timeout=self._poll_interval)
                if self._stopping:
                    return
                free = self._free()
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

    def _free(self) -> int:
        return min(self.concurrency - self._executing, self._max_uncommitted - self._uncommitted)

    def _should_claim(self) -> bool:
        return self._stopping or (self._woken and self._free() > 0)

    def _claim(self, limit: int) -> list[Claimed]:
        claimed = claiming.claim(
            self._engine, self.queue, self._fsms(), limit, self._node_id, self._lease_seconds
        )
        self.claimed_total += len(claimed)
        return claimed

    def _submit(self, claimed: Claimed) -> None:
        lease = self._executor.lease_for(claimed)
        with self._cond:
            self._executing += 1
            self._uncommitted += 1
        self._pool.submit(self._execute, claimed, lease)

    def _execute(self, claimed: Claimed, lease: Lease) -> None:
        try:
            report = self._executor.execute(claimed, lease)
        except BaseException as exc:  # execute reports through its future; belt and braces
            report = Future()
            report.set_exception(exc)
        with self._cond:
            self._executing -= 1
            if self._backlog:
                self._woken = True
            self._cond.notify_all()
        report.add_done_callback(self._committed)

    def _committed(self, future: Future[StepReport]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("a step's commit failed; its lease will expire", exc_info=exc)
        with self._cond:
            self._uncommitted -= 1
            if self._backlog:
                self._woken = True
            self._cond.notify_all()
