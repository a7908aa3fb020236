"""Several runner processes under one supervisor (``gen-durable run --processes N``).

The supervisor starts each child with the ``spawn`` start method, from a picklable
:class:`ChildSpec` (the database URL or ``--app``, the modules to import, the child's share
of the queues and the Runner's options): a child builds its own engine and Runner and
shares nothing with its siblings but the database, exactly as runners on other hosts do.
The supervisor forwards SIGTERM/SIGINT, restarts a child that dies, and gives up when
children keep dying. The child side lives in :mod:`gen_durable.supervised`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import attrs
from sqlalchemy import Engine

from gen_durable import store, supervised
from gen_durable.domain.retry import Backoff
from gen_durable.errors import ConfigurationError
from gen_durable.runtime import config
from gen_durable.runtime.stop_signals import Waker, stop_pipe, stop_signals
from gen_durable.store import schema
from gen_durable.supervised import (
    ChildSettings,
    ChildSpec,
    auto_processes,
    child_main,
    probe_engine,
    split_concurrency,
    unreachable_reason,
)

log = logging.getLogger("gen_durable.supervisor")

EXIT_OK = 0
"""The children were stopped as asked (SIGTERM, SIGINT, :meth:`Supervisor.request_stop`)."""
EXIT_FAILED = supervised.EXIT_FAILED
"""Children kept dying, one could not start for its configuration, or one was killed."""
EXIT_UNREACHABLE = supervised.EXIT_UNREACHABLE
"""The database was unreachable at start, or when the supervisor gave up."""

RESTART_BACKOFF = Backoff(base=0.5, factor=2.0, max=30.0, jitter=0.1)
"""The wait before a dead child is started again: 0.5 s after its first death within
``restart_window``, doubling with each further one, at most 30 s."""

_RESERVED = frozenset({"engine", "queues", "node_id", "supervisor"})


@attrs.define
class _Child:
    """One slot of the supervisor: the process filling it now, and its deaths."""

    spec: ChildSpec
    process: BaseProcess | None = None
    reports: Connection | None = None
    node_id: str | None = None
    restart_at: float | None = None
    deaths: deque[float] = attrs.field(factory=deque)


class Supervisor:
    """Runs ``processes`` runner processes and keeps them running until told to stop.

    Call :meth:`run` from the main module's ``if __name__ == "__main__":`` block (the
    children are started with ``spawn``, which imports the main module again). Each child
    serves its share of every queue (:func:`split_concurrency`) with its own engine and
    Runner. :meth:`run` blocks until SIGTERM/SIGINT or :meth:`request_stop`, then stops
    the children gracefully, and returns the exit code: 0 after a requested stop, 1 when
    children keep dying or cannot start, 3 when the database is unreachable.

    Args:
        queues: Queue name -> total concurrency, split across the processes; None:
            ``{"default": 10}``.
        processes: How many runner processes, or ``"auto"`` (one per CPU, at most as many
            as the queues have slots).
        dsn: The SQLAlchemy URL each child makes its engine from (a pool sized for its
            share); exactly one of ``dsn`` and ``app``.
        app: ``"MODULE:OBJECT"``: an Engine, or a callable returning one, that each child
            imports and runs on.
        imports: Modules each child imports first, so that their FSM and Job classes are
            known.
        engine_options: Extra ``create_engine`` keyword arguments for an engine made from
            ``dsn`` (picklable).
        runner_options: Keyword arguments for each child's ``Runner`` (picklable), but
            ``engine``, ``queues``, ``node_id`` and ``supervisor``.
        max_restarts: Give up (stop the other children, return 1) when children died more
            than this many times, all together, within ``restart_window`` seconds.
        restart_window: The window, in seconds, over which deaths are counted.
        backoff: The wait before a dead child is restarted, by the number of times its
            slot died within the window.
        stop_timeout: Seconds the children get to stop after SIGTERM before they are
            killed; None: the Runner's ``grace`` plus 30.
        log_level: The logging level of each child; None: the child leaves logging as is.
        settings: The children's schema, cron schedules, log format and metrics.
    """

    def __init__(
        self,
        queues: Mapping[str, int] | None = None,
        *,
        processes: int | Literal["auto"],
        dsn: str | None = None,
        app: str | None = None,
        imports: Iterable[str] = (),
        engine_options: Mapping[str, Any] | None = None,
        runner_options: Mapping[str, Any] | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        backoff: Backoff = RESTART_BACKOFF,
        stop_timeout: float | None = None,
        log_level: int | None = None,
        settings: ChildSettings | None = None,
    ) -> None:
        wanted = config.check_queues(queues if queues is not None else {"default": 10})
        count = auto_processes(wanted) if processes == "auto" else processes
        if (dsn is None) == (app is None):
            raise ConfigurationError("give exactly one of dsn and app")
        options = dict(runner_options or {})
        if _RESERVED & options.keys():
            raise ConfigurationError(
                f"runner_options may not set {sorted(_RESERVED & options.keys())}"
            )
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigurationError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        config.positive(restart_window=restart_window)
        grace = options.get("grace", 30.0)
        config.non_negative(grace=grace)
        self.stop_timeout = grace + 30.0 if stop_timeout is None else stop_timeout
        config.positive(stop_timeout=self.stop_timeout)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        """This supervisor's id: ``gd_nodes.supervisor`` of its children."""
        self.queues = wanted
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.backoff = backoff
        self._children = [
            _Child(
                ChildSpec(
                    index=index,
                    supervisor=self.id,
                    queues=share,
                    dsn=dsn,
                    app=app,
                    imports=tuple(imports),
                    engine_options=dict(engine_options or {}),
                    runner_options=options,
                    log_level=log_level,
                    settings=settings or ChildSettings(),
                )
            )
            for index, share in enumerate(split_concurrency(wanted, count))
        ]
        try:
            pickle.dumps([c.spec for c in self._children])
        except Exception as exc:  # a spawned child gets its description pickled
            raise ConfigurationError(f"the children's options must be picklable: {exc}") from exc
        self._context = multiprocessing.get_context("spawn")
        self._engine: Engine | None = None
        self._stopping = False  # set by request_stop() from any thread, or by a signal
        self._signals = 0
        self._ran = False
        self._wake_r = -1
        self._waker = Waker()  # the self-pipe's write end while run() runs
        self._deaths: deque[float] = deque()

    @property
    def shares(self) -> list[dict[str, int]]:
        """Each child's queues (name -> concurrency), in child order."""
        return [dict(c.spec.queues) for c in self._children]

    def slots_alive(self) -> list[bool]:
        """Per child slot: True while its process runs or its restart is scheduled."""
        alive = []
        for child in self._children:
            process = child.process
            try:
                running = process is not None and process.exitcode is None
            except ValueError:  # closed by the supervising thread meanwhile: it died
                running = False
            alive.append(running or child.restart_at is not None)
        return alive

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop the children and return (thread-safe)."""
        self._stopping = True
        self._waker.wake()

    def run(self) -> int:
        """Start the children, supervise them until stopped, return the exit code.

        Raises ``ConfigurationError`` when the gen_durable schema is missing or behind
        (checked once, before any child starts), or when called a second time.
        """
        if self._ran:
            raise ConfigurationError("this Supervisor already ran")
        self._ran = True
        with stop_pipe() as (self._wake_r, wake_w), self._waker.attached(wake_w):
            return self._run()

    def _run(self) -> int:
        try:
            self._engine = probe_engine(self._children[0].spec)
            reason = unreachable_reason(self._engine)
            if reason is not None:
                log.error("cannot connect to the database: %s", reason)
                return EXIT_UNREACHABLE
            # A schema that is missing or behind fails every child alike: say so once.
            schema.check(self._engine)
            self._engine.dispose()
            for child in self._children:
                self._start(child)
            return self._supervise()
        finally:
            self._stop_children()
            if self._engine is not None:
                self._engine.dispose()

    # -- the loop ----------------------------------------------------------------------

    def _supervise(self) -> int:
        while not self._stopping:
            now = time.monotonic()
            for child in self._children:
                if child.restart_at is not None and child.restart_at <= now:
                    self._start(child)
            due = [c.restart_at for c in self._children if c.restart_at is not None]
            watched: list[Any] = [self._wake_r]
            for child in self._children:
                if child.process is not None:
                    watched.append(child.process.sentinel)
                if child.reports is not None:
                    watched.append(child.reports)
            ready = wait(watched, timeout=max(0.0, min(due) - now) if due else None)
            self._take_signals(ready)
            for child in self._children:
                fatal = self._read_reports(child)
                if fatal is not None:
                    log.error("worker %d cannot start: %s", child.spec.index, fatal)
                    return EXIT_FAILED
                process = child.process
                if process is not None and process.sentinel in ready:
                    code = self._reap(child)
                    if self._stopping:
                        break
                    if not self._restart_later(child, code):
                        return self._give_up()
        return EXIT_OK if self._stop_children() else EXIT_FAILED

    def _start(self, child: _Child) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(child.spec, send),
            name=f"gen-durable-worker-{child.spec.index}",
        )
        process.start()
        send.close()  # the child holds the other copy: its exit shows as EOF here
        child.process, child.reports, child.node_id, child.restart_at = process, receive, None, None
        spec = child.spec
        log.info("worker %d started (pid %s): queues %s", spec.index, process.pid, spec.queues)

    def _read_reports(self, child: _Child) -> str | None:
        """Take in what the child said (its node id); a fatal error's message, if any."""
        reports = child.reports
        while reports is not None and reports.poll():
            try:
                kind, detail = reports.recv()
            except (EOFError, OSError):
                reports.close()
                child.reports = reports = None
                break
            if kind == "started":
                child.node_id = detail
            elif kind == "fatal":
                return str(detail)
        return None

    def _reap(self, child: _Child) -> int | None:
        process = child.process
        assert process is not None
        process.join()
        self._read_reports(child)
        code = process.exitcode
        if child.reports is not None:
            child.reports.close()
        process.close()
        child.process = child.reports = None
        if code != 0 and child.node_id is not None:
            self._forget(child.node_id)
        return code

    def _restart_later(self, child: _Child, code: int | None) -> bool:
        """Count the death; schedule the restart, or False when it is one too many."""
        now = time.monotonic()
        for deaths in (self._deaths, child.deaths):
            deaths.append(now)
            while deaths and deaths[0] < now - self.restart_window:
                deaths.popleft()
        if len(self._deaths) > self.max_restarts:
            figures = (len(self._deaths), self.restart_window, self.max_restarts)
            log.error(
                "worker %d died (exit code %s): %d deaths within %g s, more than %d; giving up",
                *(child.spec.index, code, *figures),
            )
            return False
        delay = self.backoff.delay(len(child.deaths))
        index = child.spec.index
        log.warning("worker %d died (exit code %s); restarting it in %.1f s", index, code, delay)
        child.restart_at = now + delay
        return True

    def _give_up(self) -> int:
        self._stop_children()
        assert self._engine is not None
        reason = unreachable_reason(self._engine)
        if reason is not None:
            log.error("cannot connect to the database: %s", reason)
            return EXIT_UNREACHABLE
        return EXIT_FAILED

    def _forget(self, node_id: str) -> None:
        """Delete a dead child's ``gd_nodes`` row: it never will, and it no longer runs."""
        assert self._engine is not None
        try:
            with self._engine.begin() as conn:
                store.maintenance.delete_node(conn, node_id)
        except Exception as exc:  # the reaper prunes it once its heartbeat is old enough
            log.warning("could not remove the node row of %s: %s", node_id, exc)
        finally:
            self._engine.dispose()

    # -- stopping ----------------------------------------------------------------------

    def _stop_children(self) -> bool:
        """SIGTERM every child and wait for them; True if all exited within the timeout."""
        running = [c for c in self._children if c.process is not None]
        for child in self._children:
            child.restart_at = None
        if not running:
            return True
        log.info("stopping %d worker(s)", len(running))
        for child in running:
            assert child.process is not None
            child.process.terminate()  # SIGTERM: the child's Runner drains, then exits
        deadline = time.monotonic() + self.stop_timeout
        killed = False
        while True:
            alive = [c for c in running if c.process is not None]
            if not alive:
                return not killed
            if not killed and (self._signals > 1 or time.monotonic() >= deadline):
                log.warning("killing %d worker(s) that did not stop", len(alive))
                for child in alive:
                    assert child.process is not None
                    child.process.kill()
                killed = True
            sentinels = [c.process.sentinel for c in alive if c.process is not None]
            timeout = None if killed else max(0.0, deadline - time.monotonic())
            ready = wait([self._wake_r, *sentinels], timeout=timeout)
            self._take_signals(ready)
            for child in alive:
                if child.process is not None and child.process.sentinel in ready:
                    self._reap(child)

    def _take_signals(self, ready: list[Any]) -> None:
        """Read the wake-up pipe: SIGTERM/SIGINT (from the wakeup fd) ask for a stop, a
        second one for a kill; a zero byte is :meth:`request_stop`."""
        if self._wake_r in ready:
            received = stop_signals(os.read(self._wake_r, 512))
            self._signals += received
            self._stopping = self._stopping or received > 0
