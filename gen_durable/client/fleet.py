"""The fleet as an operator sees it: which runners are alive and what they hold
(:func:`workers`), and how each queue is doing (:func:`queues`).

Read-only, in the caller's transaction; shared by ``gen-durable workers`` / ``queues`` and
the dashboard.
"""

from __future__ import annotations

import math
from datetime import datetime

import attrs

from gen_durable import store
from gen_durable.client.targets import Bind, check_now, connection
from gen_durable.errors import ValidationError

__all__ = ["STALE_BEATS", "STALE_DEFAULT", "QueueView", "WorkerView", "queues", "workers"]

STALE_BEATS = 3
"""A runner that missed this many of its own heartbeats in a row counts as stale."""
STALE_DEFAULT = 60.0
"""Seconds of silence after which a runner that recorded no interval counts as stale."""


@attrs.frozen
class WorkerView:
    """A registered runner, as :func:`workers` found it."""

    id: str
    hostname: str
    pid: int
    queues: dict[str, int]
    """Its queues and the concurrency it serves each with."""
    supervisor: str | None
    """The supervisor that started it (``gen-durable run --processes N``); None: on its own."""
    started_at: datetime
    last_heartbeat: datetime
    silent_for: float
    """Seconds since its last heartbeat, by the database's clock."""
    heartbeat_interval: float | None
    """Its own seconds between heartbeats (None: not recorded, an older runner)."""
    stale: bool
    """Silent for longer than it should be: it crashed, stalled or lost the database."""
    leader: bool
    """It holds the leadership lease (taken only by runners with cron schedules)."""
    running: int
    """Instances running under a lease it holds."""


@attrs.frozen
class QueueView:
    """A queue: its settings, its rows by status, and whether anything serves it."""

    name: str
    paused: bool
    limit: int | None
    """Its global concurrency limit (None: only each runner's own concurrency)."""
    counts: dict[str, int]
    """Its instances by status (only statuses it has)."""
    oldest_waiting_age: float | None
    """Seconds the oldest runnable instance has waited since it became due (None: none)."""
    served: bool
    """A live (not stale) runner serves it."""


def stale_after(heartbeat_interval: float | None) -> float:
    """The silence after which a runner with this heartbeat interval counts as stale."""
    if heartbeat_interval is None:
        return STALE_DEFAULT
    return STALE_BEATS * heartbeat_interval


def workers(
    bind: Bind, *, stale_after_seconds: float | None = None, now: datetime | None = None
) -> list[WorkerView]:
    """Every registered runner, grouped by host then supervisor, live or stale.

    A runner is stale when silent for longer than ``stale_after_seconds``, or by default
    for :data:`STALE_BEATS` of its own heartbeat intervals (:data:`STALE_DEFAULT` seconds
    when it recorded none). Stale rows stay until a reaper prunes them.
    """
    check_now(now)
    if stale_after_seconds is not None and not _is_seconds(stale_after_seconds):
        raise ValidationError(
            f"stale_after_seconds must be seconds > 0, got {stale_after_seconds!r}"
        )
    conn = connection(bind)
    return [
        WorkerView(
            id=r.id,
            hostname=r.hostname,
            pid=r.pid,
            queues={str(q): int(n) for q, n in (r.queues or {}).items()},
            supervisor=r.supervisor,
            started_at=r.started_at,
            last_heartbeat=r.heartbeat_at,
            silent_for=max(r.silent_for, 0.0),
            heartbeat_interval=r.heartbeat_interval,
            stale=r.silent_for
            > (stale_after_seconds if stale_after_seconds else stale_after(r.heartbeat_interval)),
            leader=r.leader,
            running=r.running,
        )
        for r in store.fleet.runners(conn, now)
    ]


def queues(bind: Bind, *, now: datetime | None = None) -> list[QueueView]:
    """Every queue that has settings, instances or a runner serving it, by name."""
    check_now(now)
    conn = connection(bind)
    settings = {q.name: q for q in store.queues.settings(conn)}
    counts: dict[str, dict[str, int]] = {}
    for c in store.queries.counts(conn):
        counts.setdefault(c.queue, {})[c.status] = c.n
    waiting = store.fleet.oldest_waiting(conn, now)
    served = {q for w in workers(conn, now=now) if not w.stale for q in w.queues}
    views = []
    for name in sorted({*settings, *counts, *served}):
        setting = settings.get(name)
        views.append(
            QueueView(
                name=name,
                paused=setting.paused if setting is not None else False,
                limit=setting.concurrency_limit if setting is not None else None,
                counts=counts.get(name, {}),
                oldest_waiting_age=waiting.get(name),
                served=name in served,
            )
        )
    return views


def _is_seconds(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value > 0
    )
