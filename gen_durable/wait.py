"""Waiting from outside: block until an instance finishes and return its result.

For a request handler that wants to wait briefly for a flow. It uses connections of its
own (never the caller's transaction): one LISTENs for the notification the runtime sends
after a finishing commit, and polling covers a missed notification.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg
from sqlalchemy import Engine

from gen_durable import client as api
from gen_durable import store
from gen_durable.errors import InstanceFailed, ResultTimeout, ValidationError
from gen_durable.runtime.notify import libpq_dsn
from gen_durable.store import models
from gen_durable.types import JSON, InstanceSnapshot


def result(
    engine: Engine,
    target: int | str,
    *,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    listen: bool = True,
) -> JSON:
    """Block until the instance finishes; return its result or raise its failure.

    ``target`` is an id or a correlation key (its unfinished instance, else the newest
    finished one). Raises :class:`~gen_durable.errors.InstanceFailed` if it finished as
    failed or cancelled, :class:`~gen_durable.errors.ResultTimeout` after ``timeout``
    seconds, :class:`~gen_durable.errors.NotFound` if nothing matches. ``listen=False``
    polls only (every ``poll_interval`` seconds), for an engine behind PgBouncer in
    transaction pooling, where LISTEN cannot work.
    """
    snap = wait(engine, target, timeout=timeout, poll_interval=poll_interval, listen=listen)
    if snap.status != "done":
        raise InstanceFailed(snap.id, snap.status.value, snap.error)
    return snap.result


def wait(
    engine: Engine,
    target: int | str,
    *,
    timeout: float | None = None,
    poll_interval: float = 1.0,
    listen: bool = True,
) -> InstanceSnapshot:
    """Block until the instance is finished; return its final snapshot (``listen`` as
    for :func:`result`)."""
    if timeout is not None and not timeout >= 0:
        raise ValidationError(f"timeout must be seconds >= 0, got {timeout!r}")
    if not poll_interval > 0:
        raise ValidationError(f"poll_interval must be > 0, got {poll_interval!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    with contextlib.ExitStack() as stack:
        listener = None
        if listen:
            listener = stack.enter_context(psycopg.connect(libpq_dsn(engine), autocommit=True))
            store.notify.listen(listener, models.schema_name(), finished=True)
        while True:
            snap = _read(engine, target)
            if snap.finished:
                return snap
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise ResultTimeout(f"instance {snap.id} is still {snap.status.value}")
            pause = poll_interval if remaining is None else min(poll_interval, remaining)
            if listener is None:
                time.sleep(pause)
            else:
                _await_finish(listener, snap.id, pause)


def _read(engine: Engine, target: int | str) -> InstanceSnapshot:
    with engine.connect() as conn:
        return api.get(conn, target)


def _await_finish(listener: psycopg.Connection[Any], instance_id: int, pause: float) -> None:
    end = time.monotonic() + pause
    wanted = str(instance_id)
    while (left := end - time.monotonic()) > 0:
        for note in listener.notifies(timeout=left, stop_after=1):
            if note.payload == wanted:
                return
