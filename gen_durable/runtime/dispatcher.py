"""The per-queue pick loop: claim a batch when there are free slots, hand rows to workers."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from gen_durable import store
from gen_durable.clock import monotonic
from gen_durable.runtime import claiming
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.failures import log_failure
from gen_durable.runtime.held import HeldConnection
from gen_durable.runtime.inflight import Lease
from gen_durable.runtime.steps import Claimed, StepReport
from gen_durable.runtime.workers import WorkerPool

log = logging.getLogger("gen_durable.runtime")


UNCOMMITTED_HEADROOM = 256
"""Claims a queue may hold beyond its concurrency while their transitions wait for the
committer: enough to fill a commit group, few enough that a stalled database does not
gather a large share of a shared backlog in one runner."""


AHEAD_STEP_SECONDS = 0.005
"""Claim ahead only while this queue's steps take less than this on average (5 ms): a row
claimed ahead waits for the first of the queue's steps to end."""

AHEAD_LINE = 3
"""The line of rows claimed ahead holds up to this many times the queue's concurrency.
Claims and commit groups grow with it (at concurrency 10, from about 20 rows each with a
line of one ``concurrency`` to about 55 with three), and with them the steps each
transaction's fixed cost is shared by; it holds rows only while steps are fast (a line of
30 fast steps drains in a few milliseconds) and never past :data:`AHEAD_HOLD_SECONDS`."""

AHEAD_HOLD_SECONDS = 0.05
"""The longest a row claimed ahead waits for a worker: then the line is given back (the
steps turned slow), so another runner may start those rows, and claims stop taking rows
ahead until steps are fast again."""

AHEAD_MIN_LINE = 30
"""At a low concurrency the line may hold more than :data:`AHEAD_LINE` times it: up to
this many rows, as many as the queue's steps drain in half of :data:`AHEAD_HOLD_SECONDS`
at their average time. Claims and commit groups then keep their size when a queue's
concurrency is split over several processes (``--processes``): with two processes of
concurrency 5, lines of 15 rows made each process's CPU per step a third higher than one
process's, and lines of 30 brought it back."""


class Dispatcher:
    """Claims runnable rows of one queue, at most ``concurrency`` steps executing.

    A worker is free again as soon as its step returned and its transition was queued
    for the committer; the claim stays held (and counted) until that commit resolves, at
    most ``concurrency + UNCOMMITTED_HEADROOM`` of them. It claims when woken (a
    notification, a local commit, a freed slot while a backlog remains) or every
    ``poll_interval`` seconds — the fallback that needs no NOTIFY.

    Claim-ahead: while steps are fast (see :data:`AHEAD_STEP_SECONDS`) and a backlog
    remains, a claim takes up to ``AHEAD_LINE * concurrency`` rows beyond the free
    slots (at a low concurrency up to :data:`AHEAD_MIN_LINE`). They wait, leased and
    heartbeated, in a local line that a worker finishing a step takes its next row from on
    the same thread (no hand-off), so the queue still never runs more than ``concurrency``
    steps at once; claims and their transactions are fewer and larger. At shutdown the
    line is handed back at once (:meth:`give_back_ahead`).
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
        self._held = HeldConnection(
            engine, session=(store.claims.begin_claim_session, store.claims.end_claim_session)
        )
        self._claims = claiming.Claims(self._held, queue, node_id, lease_seconds)
        self._executor = executor
        self._pool = pool
        self._fsms = fsms
        self._poll_interval = poll_interval
        self._cond = threading.Condition()
        self._executing = 0
        self._uncommitted = 0
        self._max_uncommitted = concurrency + UNCOMMITTED_HEADROOM
        self._ahead: deque[tuple[Claimed, Lease, float]] = deque()
        self._step_seconds = 1.0  # a moving average; claims start ahead once steps are fast
        self._woken = True
        self._backlog = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.claimed_total = 0

    def start(self) -> None:
        """Start the pick loop."""
        self._thread = threading.Thread(
            target=self._held.around(self._loop), name=f"gd-dispatch-{self.queue}", daemon=True
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
                holding = bool(self._ahead)
                wait = AHEAD_HOLD_SECONDS if holding else self._poll_interval
                woken = self._cond.wait_for(self._should_claim, timeout=wait)
                if self._stopping:
                    return
                stale = self._stale()
                # Woken only to check the line: no claim (the poll comes after the line).
                limit = self._wanted() if woken or not holding else 0
                self._woken = False
            if stale:
                self._give_back(stale)
            if limit <= 0:
                continue
            try:
                rows = self._claim(limit)
                failures = 0
            except Exception as exc:  # the database may be restarting: back off, retry
                failures += 1
                then = f"claiming again in {min(10.0, 0.1 * 2**failures):.1f} s"
                log_failure(log, logging.WARNING, f"claim on {self.queue}", exc, then)
                with self._cond:
                    self._cond.wait(min(10.0, 0.1 * 2**failures))
                continue
            self._hand_out(rows, limit)

    def _hand_out(self, rows: list[Claimed], limit: int) -> None:
        """Start what the free slots take; line up the rest, in one critical section: a
        worker that finishes after it finds the line, one that finished before left its
        slot free (so no row waits in the line while a slot is idle)."""
        now = monotonic()
        leased = [(row, self._executor.lease_for(row), now) for row in rows]
        with self._cond:
            self._backlog = len(rows) == limit
            if self._backlog:
                self._woken = True
            start = min(max(0, self._free()), len(leased))
            self._executing += start
            self._uncommitted += len(leased)
            self._ahead.extend(leased[start:])
        for row, lease, _ in leased[:start]:
            self._pool.submit(self._execute, row, lease)

    def _free(self) -> int:
        """Slots a claimed row can start in now."""
        slots = self.concurrency - self._executing - len(self._ahead)
        return min(slots, self._max_uncommitted - self._uncommitted)

    def _ahead_room(self) -> int:
        """Rows the line of rows claimed ahead may take (none while steps are slow)."""
        if self._step_seconds >= AHEAD_STEP_SECONDS:
            return 0
        drained = self.concurrency * AHEAD_HOLD_SECONDS / 2 / max(self._step_seconds, 1e-6)
        line = max(AHEAD_LINE * self.concurrency, min(AHEAD_MIN_LINE, int(drained)))
        return line - len(self._ahead)

    def _wanted(self) -> int:
        """How many rows a claim now should take: the free slots and the line's room."""
        budget = self._max_uncommitted - self._uncommitted
        return min(budget, max(0, self._free()) + self._ahead_room())

    def _should_claim(self) -> bool:
        if self._stopping:
            return True
        if not self._woken:
            return False
        # A free slot claims at once; a line running low is refilled before it runs dry.
        return self._free() > 0 or self._line_low()

    def _line_low(self) -> bool:
        return self._ahead_room() * 2 >= self.concurrency

    def give_back_ahead(self) -> None:
        """Give back the rows claimed ahead that no step started (at shutdown, once claiming
        stopped): runnable at once for another runner."""
        with self._cond:
            taken = self._take_ahead()
        if taken:
            self._give_back(taken)

    def _take_ahead(self) -> list[Lease]:
        taken = [lease for _, lease, _ in self._ahead]
        self._uncommitted -= len(taken)
        self._ahead.clear()
        self._cond.notify_all()
        return taken

    def _stale(self) -> list[Lease]:
        """The line, taken, if its oldest row waited too long (steps turned slow)."""
        if not self._ahead or monotonic() - self._ahead[0][2] < AHEAD_HOLD_SECONDS:
            return []
        self._step_seconds = max(self._step_seconds, AHEAD_HOLD_SECONDS)
        return self._take_ahead()

    def _give_back(self, leases: list[Lease]) -> None:
        for lease in leases:
            self._executor.forget(lease)
        try:
            claiming.release(self._engine, leases)
        except Exception as exc:  # the reaper returns them once their leases expire
            then = "the reaper returns them once their leases expire"
            log_failure(log, logging.WARNING, f"giving back {len(leases)} claim(s)", exc, then)

    def _claim(self, limit: int) -> list[Claimed]:
        claimed = self._claims(self._fsms(), limit)
        self.claimed_total += len(claimed)
        return claimed

    def _execute(self, claimed: Claimed, lease: Lease) -> None:
        next_row: tuple[Claimed, Lease] | None = (claimed, lease)
        while next_row is not None:
            started = monotonic()
            try:
                self._executor.execute(next_row[0], next_row[1], self._committed)
            except BaseException as exc:  # execute reports through done; belt and braces
                self._committed(None, exc)
            with self._cond:
                self._step_seconds += (monotonic() - started - self._step_seconds) * 0.2
                next_row = self._ahead.popleft()[:2] if self._ahead and not self._stopping else None
                if next_row is None:
                    self._executing -= 1
                if self._backlog and (next_row is None or self._line_low()):
                    self._woken = True
                    self._cond.notify_all()
                elif next_row is None:
                    self._cond.notify_all()

    def _committed(self, report: StepReport | None, exc: BaseException | None) -> None:
        if exc is not None:
            log_failure(log, logging.ERROR, "a step's commit", exc, "its lease will expire")
        with self._cond:
            self._uncommitted -= 1
            if self._backlog:
                self._woken = True
            # Only a commit that freed the last held claim (wait_idle) or room under the
            # headroom (_free) changes what the pick loop waits for; waking it for every
            # other commit would cost a thread switch per step.
            if self._uncommitted == 0 or self._uncommitted + 1 >= self._max_uncommitted:
                self._cond.notify_all()
