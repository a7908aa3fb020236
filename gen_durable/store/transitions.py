"""The step commit: many transitions in one fenced statement, one transaction.

Each row is still fenced by its own lease token (and an unexpired lease), so a worker
that lost its lease cannot commit; rows are locked in id order so two groups never
deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import Connection, case, cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB

from gen_durable import serialization
from gen_durable.decide import Decision
from gen_durable.store import signals as signal_sql
from gen_durable.store._common import SEP, I, array, db_now, run, seconds, unnest


@attrs.frozen
class Transition:
    """One step's outcome, ready to commit under the lease that ran it."""

    instance_id: int
    lease_token: uuid.UUID
    version: int
    decision: Decision
    consumed: tuple[int, ...] = ()


@attrs.frozen
class Committed:
    """A transition that landed: the row's new status and queue."""

    instance_id: int
    status: str
    queue: str


def _json_or_none(value: Any, present: bool) -> str | None:
    return serialization.dumps(value) if present else None


def commit(
    conn: Connection, items: Sequence[Transition], now: datetime | None
) -> dict[int, Committed]:
    """Write transitions; returns those that committed (fenced-out ones are absent).

    Runs inside the caller's transaction: the grouped committer's own, or the session a
    step wrote through. Statements: the fenced UPDATE, then signal consumption, then —
    for rows that just parked — a check for signals that are already pending.
    """
    if not items:
        return {}
    items = sorted(items, key=lambda x: x.instance_id)
    ds = [x.decision for x in items]
    t = unnest(
        id=([x.instance_id for x in items], "bigint"),
        token=([x.lease_token for x in items], "uuid"),
        kind=([d.status for d in ds], "text"),
        step=([d.step for d in ds], "text"),
        state=([serialization.dumps(d.state) for d in ds], "text"),
        delay=([None if d.delay is None else timedelta(seconds=d.delay) for d in ds], "interval"),
        run_at=([d.run_at for d in ds], "tsz"),
        await_names=([SEP.join(d.await_names) if d.await_names else None for d in ds], "text"),
        await_all=([d.await_all for d in ds], "bool"),
        await_limit=([d.await_limit for d in ds], "int"),
        timeout_step=([d.timeout_step for d in ds], "text"),
        result=([_json_or_none(d.result, d.status == "done") for d in ds], "text"),
        error=([_json_or_none(d.error, d.error is not None) for d in ds], "text"),
        reset=([d.reset_attempt for d in ds], "bool"),
    )
    t_now = db_now(now)
    finishing = t.c.kind.in_(("done", "failed", "cancelled"))
    due = case(
        (
            t.c.kind == "ready",
            func.coalesce(t.c.run_at, t_now + func.coalesce(t.c.delay, seconds(0))),
        ),
        (t.c.kind == "awaiting", t_now + t.c.delay),
        else_=None,
    )
    status = case(
        (t.c.kind == "ready", case((due > t_now, "scheduled"), else_="available")),
        else_=t.c.kind,
    )
    # Lock in id order first: two groups (or a group and a parent update) never deadlock.
    locked = (
        select(I.c.id)
        .where(I.c.id == func.any(array([x.instance_id for x in items], "bigint")))
        .order_by(I.c.id)
        .with_for_update()
        .cte("locked")
    )
    stmt = (
        update(I)
        .where(
            I.c.id == t.c.id,
            I.c.id == locked.c.id,
            I.c.lease_token == t.c.token,
            I.c.status == "running",
            I.c.lease_expires_at > func.clock_timestamp(),
        )
        .values(
            status=status,
            step=t.c.step,
            state=cast(t.c.state, JSONB),
            # a retry re-runs the same step: its version (and idempotency key) stays
            version=case((t.c.reset, I.c.version + 1), else_=I.c.version),
            attempt=case((t.c.reset, 0), else_=I.c.attempt),
            run_at=due,
            await_names=func.string_to_array(t.c.await_names, SEP),
            await_all=t.c.await_all,
            await_limit=t.c.await_limit,
            timeout_step=t.c.timeout_step,
            result=cast(t.c.result, JSONB),
            error=cast(t.c.error, JSONB),
            finished_at=case((finishing, t_now), else_=None),
            updated_at=t_now,
            lease_token=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(I.c.id, I.c.status, I.c.queue)
    )
    landed = {row.id: Committed(row.id, row.status, row.queue) for row in run(conn, stmt).all()}
    pairs = [(sig, x.version + 1) for x in items if x.instance_id in landed for sig in x.consumed]
    signal_sql.consume(conn, pairs, now)
    parked = [i for i, c in landed.items() if c.status == "awaiting"]
    if parked:
        for row in signal_sql.wake_satisfied(conn, parked, now):
            landed[row.id] = Committed(row.id, "available", row.queue)
    return landed


def set_lock_timeout(conn: Connection, milliseconds: int) -> None:
    """Bound how long this transaction waits for a row lock (``SET LOCAL lock_timeout``)."""
    run(conn, select(func.set_config("lock_timeout", f"{int(milliseconds)}ms", True)))
