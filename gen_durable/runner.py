"""The Runner: composition root of the runtime (dispatchers, committer, services)."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from gen_durable import store
from gen_durable.domain import definitions as registry
from gen_durable.domain import versioning
from gen_durable.domain.cron import Cron
from gen_durable.domain.options import HISTORY_MODES, HistoryMode
from gen_durable.errors import ConfigurationError
from gen_durable.runtime import claiming, config
from gen_durable.runtime.committer import Committer
from gen_durable.runtime.dispatcher import Dispatcher
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.failures import log_failure
from gen_durable.runtime.heartbeat import Heartbeat
from gen_durable.runtime.inflight import Inflight
from gen_durable.runtime.leader import Leader
from gen_durable.runtime.maintenance.cron import CronService
from gen_durable.runtime.maintenance.gc import GarbageCollector
from gen_durable.runtime.maintenance.reaper import Reaper
from gen_durable.runtime.maintenance.scheduler import Scheduler
from gen_durable.runtime.notify import Listener, Notifier
from gen_durable.runtime.service import Service
from gen_durable.runtime.steps import StepReport
from gen_durable.runtime.stop_signals import Waker, stop_pipe, stop_signals
from gen_durable.runtime.workers import WorkerPool
from gen_durable.store import models, schema
from gen_durable.store.transitions import Committed
from gen_durable.types import FINISHED

log = logging.getLogger("gen_durable.runner")

DEFAULT_MAX_CHILDREN = 10_000
"""How many children one Spawn may insert, unless ``Runner(max_children=...)`` says."""
SERVICE_CONNECTIONS = 6
"""Connections the runner's own threads may hold at once: committer, heartbeat,
scheduler, reaper, GC and the notifier."""


class Runner:
    """Claims runnable instances of its queues and runs their steps on a thread pool.

    Use it as a context manager, with :meth:`start`/:meth:`stop`, or block in
    :meth:`run_forever` (SIGTERM and SIGINT stop it gracefully: no new claims, in-flight
    steps get ``grace`` seconds to finish, the rest are released for another runner).
    Invalid values raise ``ConfigurationError`` when the Runner is created.

    Args:
        engine: A SQLAlchemy engine on the database, whose pool can hold every connection
            the runner uses at once (workers, dispatchers and its service threads).
        queues: Queue name -> concurrency (steps of that queue in flight at once); None:
            ``{"default": 10}``.
        fsms: The classes (or registry names) this runner may claim; None: every class
            registered in its process when it claims.
        lease: Seconds a claim stays valid without a heartbeat.
        heartbeat: Seconds between lease extensions, shorter than ``lease``; None:
            ``lease / 3``.
        poll_interval: Seconds between claims when no notification arrives, and between
            checks for due timers.
        grace: Seconds running steps get to finish at shutdown; the claims of those still
            running are then released for another runner.
        reaper_interval: Seconds between checks for expired leases; None:
            ``max(lease / 4, 0.2)``.
        gc_retention: Seconds a finished instance is kept before it is deleted (7 days).
        gc_interval: Seconds between garbage-collection rounds.
        listen: Hold a ``LISTEN`` connection for immediate wake-ups; False polls only (for
            PgBouncer in transaction pooling mode).
        check_schema: At start, check that the database is migrated for this library.
        node_id: This runner's name in ``gd_nodes`` and in its claims; None:
            ``host:pid:random``.
        observer: A callable that receives a :class:`StepReport` after each step.
        max_children: The most children one ``Spawn`` may insert (they are written in one
            transaction); a step that spawns more fails its attempt with
            ``InvalidOutcome``.
        cron: ``Cron(...)`` schedules to fire; with any, the runners elect a leader, and
            only the leader fires them.
        leader_ttl: Seconds the leader's lease lasts unrenewed (it renews every third of
            it); when it lapses another runner takes over the schedules.
        history: What the transition history (``gd_history``) records for classes that
            do not set their own ``history`` option: ``"all"``, ``"errors"`` (steps that
            raised or returned ``Fail``) or ``"none"`` — the default, because each
            recorded commit group costs one more INSERT (its WAL and a statement) in the
            hot path.
        supervisor: The id of the supervisor that started this runner (``gen-durable run
            --processes N``), recorded in ``gd_nodes``; None: started on its own.
    """

    def __init__(
        self,
        engine: Engine,
        queues: Mapping[str, int] | None = None,
        *,
        fsms: Iterable[type[registry.Definition] | str] | None = None,
        lease: float = 30.0,
        heartbeat: float | None = None,
        poll_interval: float = 1.0,
        grace: float = 30.0,
        reaper_interval: float | None = None,
        gc_retention: float = 7 * 86400.0,
        gc_interval: float = 60.0,
        listen: bool = True,
        check_schema: bool = True,
        node_id: str | None = None,
        observer: Callable[[StepReport], None] | None = None,
        max_children: int = DEFAULT_MAX_CHILDREN,
        cron: Iterable[Cron] = (),
        leader_ttl: float = 15.0,
        history: HistoryMode = "none",
        supervisor: str | None = None,
    ) -> None:
        self.queues = config.check_queues(queues if queues is not None else {"default": 10})
        if isinstance(max_children, bool) or not isinstance(max_children, int) or max_children < 1:
            raise ConfigurationError(f"max_children must be an int >= 1, got {max_children!r}")
        if history not in HISTORY_MODES:
            raise ConfigurationError(
                f"history must be one of {', '.join(HISTORY_MODES)}, got {history!r}"
            )
        config.positive(lease=lease, poll_interval=poll_interval, gc_interval=gc_interval)
        config.non_negative(grace=grace, gc_retention=gc_retention)
        heartbeat = lease / 3 if heartbeat is None else heartbeat
        config.positive(heartbeat=heartbeat)
        if heartbeat >= lease:
            raise ConfigurationError("heartbeat must be shorter than the lease")
        self.engine = engine
        self.lease = lease
        self.grace = grace
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.supervisor = supervisor
        self._fixed_fsms = None if fsms is None else [registry.resolve(f).name for f in fsms]
        self._check_pool(engine)
        self._check_schema = check_schema
        self._stop_requested = threading.Event()
        self._waker = Waker()  # run_forever's pipe, for request_stop()
        self._started = False
        self._stopped = False
        self.inflight = Inflight()
        self.notifier = Notifier(engine)
        self.committer = Committer(engine, self._on_committed)
        self.executor = Executor(
            engine,
            self.committer,
            self.inflight,
            on_committed=self._on_committed,
            observer=observer,
            max_children=max_children,
            history=history,
        )
        total = sum(self.queues.values())
        self._pool = WorkerPool(total)
        self.dispatchers = {
            name: Dispatcher(
                engine,
                name,
                concurrency,
                self.executor,
                self._pool,
                node_id=self.node_id,
                fsms=self.known_fsms,
                lease_seconds=lease,
                poll_interval=poll_interval,
            )
            for name, concurrency in self.queues.items()
        }
        self.heartbeat = Heartbeat(engine, self.inflight, self.node_id, lease, heartbeat)
        self.scheduler = Scheduler(engine, self._wake, poll_interval, history=history)
        self.reaper = Reaper(
            engine,
            self._wake,
            reaper_interval if reaper_interval is not None else max(lease / 4, 0.2),
            node_ttl=max(10 * lease, 60.0),
            on_failed=self.notifier.add_finished,
            history=history,
        )
        self.gc = GarbageCollector(engine, gc_retention, gc_interval)
        self.listener = (
            Listener(engine, self._on_notification, self._wake_all, models.schema_name())
            if listen
            else None
        )
        self._services: list[Service] = [self.heartbeat, self.scheduler, self.reaper, self.gc]
        schedules = list(cron)
        for schedule in schedules:
            if not isinstance(schedule, Cron):
                raise ConfigurationError(f"cron takes Cron(...) schedules, got {schedule!r}")
        config.positive(leader_ttl=leader_ttl)
        self.leader = Leader(engine, self.node_id, ttl=leader_ttl) if schedules else None
        self.cron = None
        if self.leader is not None:
            try:
                self.cron = CronService(
                    engine,
                    schedules,
                    lambda: self.leader is not None and self.leader.is_leader,
                    poll_interval,
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from exc
            self._services += [self.leader, self.cron]

    # -- configuration ---------------------------------------------------------------

    def known_fsms(self) -> list[str]:
        """Registry names this runner may claim (it never claims a class it does not know)."""
        if self._fixed_fsms is not None:
            return self._fixed_fsms
        return sorted(registry.registered())

    def _check_pool(self, engine: Engine) -> None:
        pool = engine.pool
        if not isinstance(pool, QueuePool):
            return
        overflow = getattr(pool, "_max_overflow", 0)
        if overflow < 0:
            return
        capacity = pool.size() + overflow
        needed = sum(self.queues.values()) + len(self.queues) + SERVICE_CONNECTIONS
        if capacity < needed:
            raise ConfigurationError(
                f"the engine's pool allows {capacity} connections but this Runner may hold "
                f"{needed} at once ({sum(self.queues.values())} workers, {len(self.queues)} "
                f"dispatchers, {SERVICE_CONNECTIONS} service threads); create the engine with "
                f"pool_size={needed} (or a larger max_overflow)"
            )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Runner:
        """Start claiming and running steps in background threads."""
        if self._started:
            raise ConfigurationError("this Runner was already started")
        self._started = True
        if self._check_schema:
            schema.check(self.engine)
        with self.engine.begin() as conn:
            store.maintenance.upsert_node(
                conn,
                self.node_id,
                socket.gethostname(),
                os.getpid(),
                dict(self.queues),
                self.known_fsms(),
                None,
                self.supervisor,
                heartbeat_interval=self.heartbeat.interval,
                reaper_interval=self.reaper.interval,
                known=versioning.known(list(filter(None, map(registry.lookup, self.known_fsms())))),
            )
        self._pool.start()
        self.committer.start()
        self.notifier.start()
        for service in self._services:
            service.start()
        if self.listener is not None:
            self.listener.start()
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        log.info("runner %s started: queues %s", self.node_id, dict(self.queues))
        return self

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming, give in-flight steps ``grace`` seconds, release the rest."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        self.request_stop()  # run_forever() returns too
        grace = self.grace if grace is None else grace
        for dispatcher in self.dispatchers.values():
            dispatcher.stop_claiming()
        for dispatcher in self.dispatchers.values():
            dispatcher.join()
        for dispatcher in self.dispatchers.values():
            dispatcher.give_back_ahead()  # claimed ahead, never started: for another runner
        deadline = threading.Event()
        timer = threading.Timer(grace, deadline.set)
        timer.start()
        for dispatcher in self.dispatchers.values():
            while dispatcher.running and not deadline.is_set():
                dispatcher.wait_idle(0.05)
        timer.cancel()
        leftovers = self.inflight.snapshot()
        if leftovers:
            self._release(leftovers)
        self.committer.stop()
        for service in self._services:
            service.stop()
        if self.listener is not None:
            self.listener.stop()
        self.notifier.stop()
        try:
            with self.engine.begin() as conn:
                store.maintenance.delete_node(conn, self.node_id)
        except Exception as exc:
            log.warning("could not remove node row: %s", exc)
        self._pool.shutdown()
        log.info("runner %s stopped", self.node_id)

    def _release(self, leftovers: list[Any]) -> None:
        try:
            released = claiming.release(self.engine, leftovers, ran_on=self.node_id)
            log.info("released %d claim(s) still running after the grace period", len(released))
        except Exception as exc:  # the reaper returns them once their leases expire
            then = "the reaper returns them once their leases expire"
            log_failure(log, logging.WARNING, "releasing the claims", exc, then)
        finally:
            # Only now: a step that stops on ``ctx.cancelled`` must find its claim given
            # back, so that the commit of its early end is fenced out, never racing it.
            for lease in leftovers:
                lease.cancel.set()

    def run_forever(self) -> None:
        """Start, then block until SIGTERM/SIGINT (or :meth:`request_stop`), then stop.

        In the main thread, SIGTERM and SIGINT reach it through a pipe, not a Python
        handler that would take a lock in the middle of whatever the thread was doing.
        """
        try:
            with stop_pipe() as (wake_r, wake_w), self._waker.attached(wake_w):
                self.start()
                while not self._stop_requested.is_set():
                    select.select([wake_r], [], [])
                    if stop_signals(os.read(wake_r, 512)):
                        log.info("received SIGTERM or SIGINT: stopping")
                        break
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`run_forever` to stop (thread-safe)."""
        self._stop_requested.set()
        self._waker.wake()

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- wake-ups ------------------------------------------------------------------------

    def _on_committed(self, committed: list[Committed]) -> None:
        others: set[str] = set()
        finished = [c.instance_id for c in committed if c.status in FINISHED]
        if finished:
            self.notifier.add_finished(finished)
        # Once per queue, not per row: a group of a thousand FSM steps wakes one loop.
        for queue in {item.queue for item in committed if item.status == "available"}:
            dispatcher = self.dispatchers.get(queue)
            if dispatcher is not None and dispatcher.has_room():
                dispatcher.wake()
            else:
                others.add(queue)
        if others:
            self.notifier.add(others)

    def _wake(self, queues: Iterable[str]) -> None:
        distinct = set(queues)
        for name in distinct:
            dispatcher = self.dispatchers.get(name)
            if dispatcher is not None:
                dispatcher.wake()
        self.notifier.add(distinct)

    def _on_notification(self, queue: str) -> None:
        dispatcher = self.dispatchers.get(queue)
        if dispatcher is not None:
            dispatcher.wake()

    def _wake_all(self) -> None:
        for dispatcher in self.dispatchers.values():
            dispatcher.wake()
