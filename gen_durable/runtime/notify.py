"""Wake-ups: a LISTEN connection per runner, and an out-of-band, debounced NOTIFY sender.

Polling remains the fallback: after a reconnect every queue is woken once, and a runner
behind PgBouncer (no LISTEN) simply polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import psycopg
from sqlalchemy import Engine

from gen_durable import store
from gen_durable.runtime.failures import log_failure
from gen_durable.runtime.held import HeldConnection

log = logging.getLogger("gen_durable.runtime")


def libpq_dsn(engine: Engine) -> str:
    """The engine's URL as a libpq connection string (for dedicated psycopg connections)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """LISTENs on the schema's channel and calls ``on_wake(queue)`` per notification."""

    def __init__(
        self,
        engine: Engine,
        on_wake: Callable[[str], None],
        on_reconnect: Callable[[], None],
        schema: str,
    ) -> None:
        self._dsn = libpq_dsn(engine)
        self._on_wake = on_wake
        self._on_reconnect = on_reconnect
        self._schema = schema
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[object] | None = None
        self.connected = threading.Event()

    def start(self) -> None:
        """Start listening in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="gd-listener", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop listening and close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn:
                    store.notify.listen(conn, self._schema)
                    self.connected.set()
                    if failures:
                        log.info("listener reconnected")
                    failures = 0
                    self._on_reconnect()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._on_wake(note.payload)
            except Exception as exc:
                self.connected.clear()
                failures += 1
                then = "polling until it is back"
                log_failure(log, logging.WARNING, "the listener's connection", exc, then)
                self._stop.wait(min(10.0, 0.2 * 2**failures))
        self.connected.clear()


class Notifier:
    """Sends NOTIFY for queues the runtime made runnable, after its commits, debounced."""

    def __init__(self, engine: Engine, debounce: float = 0.02) -> None:
        self._held = HeldConnection(engine, autocommit=True)
        self._debounce = debounce
        self._lock = threading.Lock()
        self._queues: set[str] = set()
        self._finished: set[int] = set()
        self._event = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sender thread."""
        self._thread = threading.Thread(
            target=self._held.around(self._loop), name="gd-notifier", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Flush and stop."""
        self._stop.set()
        self._event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def add(self, queues: Iterable[str]) -> None:
        """Ask for a wake-up of these queues on every runner."""
        with self._lock:
            before = len(self._queues)
            self._queues.update(queues)
            changed = len(self._queues) != before
        if changed:
            self._event.set()

    def add_finished(self, instance_ids: Iterable[int]) -> None:
        """Announce finished instances to whoever waits for their results."""
        with self._lock:
            self._finished.update(instance_ids)
        self._event.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._event.wait()
            self._stop.wait(self._debounce)
            self._flush()
        self._flush()

    def _flush(self) -> None:
        self._event.clear()
        with self._lock:
            queues, self._queues = self._queues, set()
            finished, self._finished = self._finished, set()
        if not queues and not finished:
            return
        try:
            # One statement in autocommit: its notifications go out when it completes.
            with self._held.begin() as conn:
                store.notify.announce(conn, queues, finished)
        except Exception as exc:  # a lost wake-up is covered by polling
            log.debug("notify failed: %s", exc)
