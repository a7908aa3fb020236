"""One loop shape for every background service: validated config, ``run_once``, jittered wait."""

from __future__ import annotations

import logging
import random
import threading

from gen_durable.runtime.failures import log_failure

log = logging.getLogger("gen_durable.runtime")


class Service:
    """A background loop: calls :meth:`run_once` every ``interval`` seconds (±10 %).

    ``run_once`` returns True to run again at once (there is more to do). Errors are
    logged and retried with growing pauses, so a database restart never kills a service.
    """

    name = "service"

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"{self.name}: interval must be > 0")
        self.interval = interval
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """Do one round of work; True if there is more to do right away."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=f"gd-{self.name}", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Run the next round now instead of at the end of the interval."""
        self._kick.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and wait for the current round to end."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            more = False
            try:
                more = bool(self.run_once())
                failures = 0
            except Exception as exc:  # a service must outlive database outages
                failures += 1
                log_failure(log, logging.WARNING, self.name, exc, "trying again later")
            if more and not failures:
                continue
            pause = self.interval * random.uniform(0.9, 1.1)
            if failures:
                pause = min(30.0, self.interval * 2 ** min(failures, 5))
            self._kick.wait(pause)
            self._kick.clear()
