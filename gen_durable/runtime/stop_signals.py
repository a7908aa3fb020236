"""SIGTERM and SIGINT as bytes on a pipe, for a main thread that waits to stop.

A Python signal handler runs in the main thread between two bytecodes, whatever that
thread holds: one that sets a ``threading.Event`` (or logs) can deadlock on a lock the
interrupted code holds, such as the Event's own while the thread waits on it. So the
Python handler does nothing; the interpreter's C handler writes the signal's number to a
wakeup fd, and the waiting thread reads it as data. A zero byte is a stop asked for by
another thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
ASKED = b"\0"
"""What a thread writes to the pipe to wake the waiting one (not a signal number)."""


def _caught(signum: int, frame: FrameType | None) -> None:
    """The Python handler of SIGTERM/SIGINT: nothing, the wakeup fd carries the signal."""


@contextlib.contextmanager
def signals_to(fd: int) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT are written to ``fd`` (a non-blocking pipe) by the
    C handler, in whichever thread gets them, instead of stopping the process.

    A main thread blocked in ``wait()`` on that pipe wakes up at once (a Python handler
    would only run once the main thread runs again). Outside the main thread: no change.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous_fd = signal.set_wakeup_fd(fd, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, _caught) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)


@contextlib.contextmanager
def stop_pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, non-blocking write end) that SIGTERM and SIGINT are written to
    while inside (:func:`signals_to`); both ends are closed on the way out."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        with signals_to(write_fd):
            yield read_fd, write_fd
    finally:
        os.close(read_fd)
        os.close(write_fd)


class Waker:
    """The write end of a stop pipe, for other threads to wake the waiting one with
    :data:`ASKED`: never written once detached (the fd may be closed, or reused)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None

    @contextlib.contextmanager
    def attached(self, fd: int) -> Iterator[None]:
        """Wake through ``fd`` while inside."""
        with self._lock:
            self._fd = fd
        try:
            yield
        finally:
            with self._lock:
                self._fd = None

    def wake(self) -> None:
        """Wake the waiting thread (nothing when no pipe is attached)."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
                    os.write(self._fd, ASKED)


def stop_signals(data: bytes) -> int:
    """How many SIGTERM/SIGINT the bytes read from a wakeup fd hold."""
    return sum(1 for signum in data if signum in STOP_SIGNALS)
