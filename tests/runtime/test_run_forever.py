"""``Runner.run_forever`` in the main thread: SIGTERM/SIGINT reach it through a pipe (the
Python handler does nothing, so it can take no lock the interrupted code holds), and a
stop asked for from another thread ends it at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest
from _support.helpers import wait_until
from sqlalchemy import Engine

from gen_durable import Runner
from gen_durable.runtime import stop_signals


def _run_forever_while(runner: Runner, probe: Callable[[], None]) -> None:
    """Run ``runner.run_forever()`` here (the main thread) while ``probe`` runs in a
    thread once the runner started. run_forever waits on its pipe without a timeout: a
    stop that did not reach the pipe would hang here (the suite's timeout fails it)."""

    def in_thread() -> None:
        wait_until(lambda: runner._started, 10)
        probe()

    thread = threading.Thread(target=in_thread, daemon=True)
    thread.start()
    runner.run_forever()
    thread.join(10)


def test_sigterm_is_written_to_a_pipe_and_ends_run_forever(engine: Engine) -> None:
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    runner = Runner(engine, queues={"default": 1}, poll_interval=0.1, grace=1.0)
    seen: dict[str, object] = {}

    def sigterm() -> None:
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        if seen["handler"] is stop_signals._caught:  # else SIGTERM would end the test run
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            runner.request_stop()

    _run_forever_while(runner, sigterm)
    # The Python handler does nothing (a handler that set an Event could deadlock on the
    # Event's lock, held by the very wait it interrupted); the wakeup fd carries it.
    assert seen["handler"] is stop_signals._caught
    assert signal.getsignal(signal.SIGTERM) is before
    assert runner._stopped


@pytest.mark.parametrize("how", ["request_stop", "stop"])
def test_a_stop_from_another_thread_ends_run_forever(engine: Engine, how: str) -> None:
    runner = Runner(engine, queues={"default": 1}, poll_interval=30.0, grace=1.0)
    _run_forever_while(runner, getattr(runner, how))
    assert runner._stopped
