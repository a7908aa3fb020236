"""The step thread pool: daemon threads, so a step still running after shutdown's grace
period (its claim already released) never keeps the process alive."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

_Task = tuple[Callable[..., Any], tuple[Any, ...], "Future[Any]"]


class WorkerPool:
    """A fixed number of daemon threads running submitted calls."""

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

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a worker thread."""
        future: Future[T] = Future()
        self._tasks.put((fn, args, future))
        return future

    def shutdown(self) -> None:
        """Stop idle threads; busy ones finish their call and then exit."""
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            fn, args, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the future's owner
                future.set_exception(exc)
