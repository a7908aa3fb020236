"""The step thread pool: daemon threads, so a step still running after shutdown's grace
period (its claim already released) never keeps the process alive."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gen_durable.runtime")

_Task = tuple[Callable[..., Any], tuple[Any, ...]]


class WorkerPool:
    """A fixed number of daemon threads running submitted calls.

    Fire and forget: a call reports its own outcome (the dispatcher's calls never raise);
    one that does raise is logged. No future per call — this is the per-step hot path.
    """

    def __init__(self, size: int, name: str = "gd-worker") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(size)
        ]

    def start(self) -> None:
        """Start the threads."""
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker thread."""
        self._tasks.put((fn, args))

    def shutdown(self) -> None:
        """Stop idle threads; busy ones finish their call and then exit."""
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            fn, args = task
            try:
                fn(*args)
            except BaseException:  # never lose the thread to one call
                log.exception("a worker call raised")
