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
from gen_durable.domain.decide import Transition
from gen_durable.runtime.failures import log_failure
from gen_durable.runtime.held import HeldConnection
from gen_durable.store.transitions import Committed

log = logging.getLogger("gen_durable.runtime")

OnCommitted = Callable[[list[Committed]], None]
Waiter = Callable[[bool | BaseException], None]
"""Told once how a transition's commit ended: True (landed), False (fenced out), or the
error that made it impossible (the step's lease will expire)."""
Item = tuple[Transition, Waiter]
RELOCK_PAUSE = 0.05
"""Seconds before a transition whose row was locked from outside is tried again."""
RELOCK_TIMEOUT_MS = 10
"""``lock_timeout`` of those retries: alone, and short, so that they never hold up a group."""


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
        self._held = HeldConnection(engine)
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._lock_timeout_ms = lock_timeout_ms
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.batches = 0
        self.committed = 0
        self.stalled_groups = 0
        """Groups that waited out ``lock_timeout`` on a row locked from outside."""

    def start(self) -> None:
        """Start the committer thread."""
        self._thread = threading.Thread(
            target=self._held.around(self._loop), name="gd-committer", daemon=True
        )
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
        self.submit_to(transition, settle(future))
        return future

    def submit_to(self, transition: Transition, waiter: Waiter) -> None:
        """Queue a transition; ``waiter`` is called on the committer's thread once its
        group's commit ended (what a step's hot path uses: no future per step)."""
        if self._stopped:  # the runner released its leases: this commit would be fenced
            _tell(waiter, False)
        else:
            self._queue.put((transition, waiter))

    def _loop(self) -> None:
        deferred: list[tuple[float, Item]] = []
        stopping = False
        while not stopping or deferred:
            if stopping:  # leases were released: whatever still waits would be fenced
                for _, (_, waiter) in deferred:
                    _tell(waiter, False)
                return
            wait = None
            if deferred:
                wait = max(0.0, min(at for at, _ in deferred) - time.monotonic())
            batch: list[Item] = []
            try:
                first = self._queue.get(timeout=wait)
                if first is None:
                    stopping = True
                else:
                    batch.append(first)
            except queue.Empty:
                pass
            while len(batch) < self._max_batch and not stopping:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            now = time.monotonic()
            due = [item for at, item in deferred if at <= now]
            deferred = [(at, item) for at, item in deferred if at > now]
            if batch:
                retry_at = time.monotonic() + RELOCK_PAUSE
                deferred.extend((retry_at, item) for item in self._commit_batch(batch))
            if due:  # rows found locked from outside: retried alone, never in a group
                retry_at = time.monotonic() + RELOCK_PAUSE
                still = self._commit_alone(due, RELOCK_TIMEOUT_MS)
                deferred.extend((retry_at, item) for item in still)

    def _commit_batch(self, batch: list[Item]) -> list[Item]:
        """Commit a group; returns the items whose row stayed locked from outside."""
        failures = 0
        while True:
            try:
                landed = self._write([t for t, _ in batch], self._lock_timeout_ms)
            except OperationalError as exc:
                if _is_lock_timeout(exc):
                    self.stalled_groups += len(batch) > 1
                    return self._commit_alone(batch, self._lock_timeout_ms)
                failures = self._pause(failures, exc)
                continue
            except DBAPIError as exc:
                if _is_permanent(exc):  # retrying cannot help: find the transition at fault
                    return self._commit_alone(batch, self._lock_timeout_ms)
                failures = self._pause(failures, exc)
                continue
            except Exception:  # not the database's: one at a time, so only its own step fails
                return self._commit_alone(batch, self._lock_timeout_ms)
            self._resolve(batch, landed)
            return []

    def _commit_alone(self, batch: list[Item], lock_timeout_ms: int) -> list[Item]:
        """One row at a time, so that only a row locked from outside waits."""
        locked: list[Item] = []
        for item in batch:
            failures = 0
            while True:
                try:
                    landed = self._write([item[0]], lock_timeout_ms)
                except OperationalError as exc:
                    if _is_lock_timeout(exc):
                        locked.append(item)
                        break
                    failures = self._pause(failures, exc)
                    continue
                except DBAPIError as exc:
                    if not _is_permanent(exc):
                        failures = self._pause(failures, exc)
                        continue
                    then = "the step's lease will expire and it runs again"
                    log_failure(log, logging.ERROR, "a transition's commit", exc, then)
                    _tell(item[1], exc)
                    break
                except Exception as exc:  # the step's lease expires; it runs again
                    then = "the step's lease will expire and it runs again"
                    log_failure(log, logging.ERROR, "a transition's commit", exc, then)
                    _tell(item[1], exc)
                    break
                self._resolve([item], landed)
                break
        return locked

    @staticmethod
    def _pause(failures: int, exc: DBAPIError) -> int:
        # The outcome of a failed commit may be unknown; retrying is safe because a
        # transition that did land has cleared its lease token and is fenced out.
        log_failure(log, logging.WARNING, "commit", exc, "retrying")
        time.sleep(min(5.0, 0.05 * 2 ** (failures + 1)))
        return failures + 1

    def _write(
        self, transitions: list[Transition], lock_timeout_ms: int | None
    ) -> dict[int, Committed]:
        with self._held.begin() as conn:
            return store.transitions.commit(
                conn, transitions, None, lock_timeout_ms=lock_timeout_ms
            )

    def _resolve(self, batch: list[Item], landed: dict[int, Committed]) -> None:
        self.batches += 1
        self.committed += len(landed)
        try:
            self._on_committed(list(landed.values()))
        except Exception:  # waking dispatchers must never lose a commit's result
            log.exception("on_committed callback failed")
        for transition, waiter in batch:
            _tell(waiter, transition.instance_id in landed)


def settle(future: Future[bool]) -> Waiter:
    """A waiter that resolves ``future``."""

    def waiter(result: bool | BaseException) -> None:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    return waiter


def _tell(waiter: Waiter, result: bool | BaseException) -> None:
    try:
        waiter(result)
    except Exception:  # one step's bookkeeping must never cost the group's others theirs
        log.exception("a commit's waiter failed")


def _is_lock_timeout(exc: OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "55P03"


PERMANENT_CLASSES = ("0A", "22", "23", "42", "44")
"""SQLSTATE classes that the same statement meets again on every retry: feature not
supported, data exception, integrity constraint violation, syntax error or access rule
violation (insufficient privilege, an undefined table), WITH CHECK OPTION violation."""


def _is_permanent(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate[:2] in PERMANENT_CLASSES
