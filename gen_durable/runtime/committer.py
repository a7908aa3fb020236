"""Grouped commits: the transitions of many steps in one statement and one commit.

A step that did not use ``ctx.session`` hands its transition here. The committer writes
everything that is ready in one transaction, each row fenced by its own lease token.
A row locked from outside (a signal sender's long transaction) must not stall the group:
the group runs under a short ``lock_timeout`` and, if it hits one, each row is committed
alone so that only the locked row waits.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from gen_durable import store
from gen_durable.store.transitions import Committed, Transition

log = logging.getLogger("gen_durable.runtime")

OnCommitted = Callable[[list[Committed]], None]


class Committer:
    """A thread that commits queued transitions in groups."""

    def __init__(
        self,
        engine: Engine,
        on_committed: OnCommitted,
        *,
        max_batch: int = 500,
        lock_timeout_ms: int = 200,
    ) -> None:
        self._engine = engine
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._lock_timeout_ms = lock_timeout_ms
        self._queue: queue.SimpleQueue[tuple[Transition, Future[bool]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.batches = 0
        self.committed = 0

    def start(self) -> None:
        """Start the committer thread."""
        self._thread = threading.Thread(target=self._loop, name="gd-committer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop."""
        self._stopped = True
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, transition: Transition) -> Future[bool]:
        """Queue a transition; the future resolves True if it committed, False if fenced."""
        future: Future[bool] = Future()
        if self._stopped:  # the runner released its leases: this commit would be fenced
            future.set_result(False)
        else:
            self._queue.put((transition, future))
        return future

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                stopping = True
                batch: list[tuple[Transition, Future[bool]]] = []
            else:
                batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if batch:
                self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[Transition, Future[bool]]]) -> None:
        pending = {t.instance_id: (t, f) for t, f in batch}
        failures = 0
        while pending:
            try:
                landed = self._write([t for t, _ in pending.values()], self._lock_timeout_ms)
            except OperationalError as exc:
                if _is_lock_timeout(exc) and len(pending) > 1:
                    self._commit_alone(pending)
                    return
                failures += 1
                log.warning("group commit failed (%s); retrying", exc.orig or exc)
                time.sleep(min(5.0, 0.05 * 2**failures))
                continue
            except DBAPIError as exc:
                failures += 1
                log.warning("group commit failed (%s); retrying", exc.orig or exc)
                time.sleep(min(5.0, 0.05 * 2**failures))
                continue
            self._resolve(pending, landed)
            return

    def _commit_alone(self, pending: dict[int, tuple[Transition, Future[bool]]]) -> None:
        """One row at a time, so that only a row locked from outside waits."""
        for instance_id, (transition, future) in list(pending.items()):
            failures = 0
            while True:
                try:
                    landed = self._write([transition], None)
                    break
                except DBAPIError as exc:
                    failures += 1
                    log.warning("commit of %s failed (%s); retrying", instance_id, exc.orig)
                    time.sleep(min(5.0, 0.05 * 2**failures))
            self._resolve({instance_id: (transition, future)}, landed)

    def _write(
        self, transitions: list[Transition], lock_timeout_ms: int | None
    ) -> dict[int, Committed]:
        with self._engine.begin() as conn:
            if lock_timeout_ms is not None:
                store.transitions.set_lock_timeout(conn, lock_timeout_ms)
            return store.transitions.commit(conn, transitions, None)

    def _resolve(
        self,
        pending: dict[int, tuple[Transition, Future[bool]]],
        landed: dict[int, Committed],
    ) -> None:
        self.batches += 1
        self.committed += len(landed)
        try:
            self._on_committed(list(landed.values()))
        except Exception:  # waking dispatchers must never lose a commit's result
            log.exception("on_committed callback failed")
        for instance_id, (_, future) in pending.items():
            future.set_result(instance_id in landed)


def _is_lock_timeout(exc: OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "55P03"
