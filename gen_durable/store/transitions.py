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
from gen_durable.store._common import NOW, SEP, ZERO, I, param, run, unnest_params


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


_T = unnest_params(
    id="bigint",
    token="uuid",
    kind="text",
    step="text",
    state="text",
    delay="interval",
    run_at="tsz",
    await_names="text",
    await_all="bool",
    await_limit="int",
    timeout_step="text",
    result="text",
    error="text",
    reset="bool",
)
_DUE = case(
    (_T.c.kind == "ready", func.coalesce(_T.c.run_at, NOW + func.coalesce(_T.c.delay, ZERO))),
    (_T.c.kind == "awaiting", NOW + _T.c.delay),
    else_=None,
)
# Lock in id order first: two groups (or a group and a parent update) never deadlock.
_LOCKED = (
    select(I.c.id)
    .where(I.c.id == func.any(param("id", "bigint", is_array=True)))
    .order_by(I.c.id)
    .with_for_update()
    .cte("locked")
)
_COMMIT = (
    update(I)
    .where(
        I.c.id == _T.c.id,
        I.c.id == _LOCKED.c.id,
        I.c.lease_token == _T.c.token,
        I.c.status == "running",
        I.c.lease_expires_at > func.clock_timestamp(),
    )
    .values(
        status=case(
            (_T.c.kind == "ready", case((_DUE > NOW, "scheduled"), else_="available")),
            else_=_T.c.kind,
        ),
        step=_T.c.step,
        state=cast(_T.c.state, JSONB),
        # a retry re-runs the same step: its version (and idempotency key) stays
        version=case((_T.c.reset, I.c.version + 1), else_=I.c.version),
        attempt=case((_T.c.reset, 0), else_=I.c.attempt),
        run_at=_DUE,
        await_names=func.string_to_array(_T.c.await_names, SEP),
        await_all=_T.c.await_all,
        await_limit=_T.c.await_limit,
        timeout_step=_T.c.timeout_step,
        result=cast(_T.c.result, JSONB),
        error=cast(_T.c.error, JSONB),
        finished_at=case((_T.c.kind.in_(("done", "failed", "cancelled")), NOW), else_=None),
        updated_at=NOW,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(I.c.id, I.c.status, I.c.queue)
)


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
    params = {
        "id": [x.instance_id for x in items],
        "token": [x.lease_token for x in items],
        "kind": [d.status for d in ds],
        "step": [d.step for d in ds],
        "state": [serialization.dumps(d.state) for d in ds],
        "delay": [None if d.delay is None else timedelta(seconds=d.delay) for d in ds],
        "run_at": [d.run_at for d in ds],
        "await_names": [SEP.join(d.await_names) if d.await_names else None for d in ds],
        "await_all": [d.await_all for d in ds],
        "await_limit": [d.await_limit for d in ds],
        "timeout_step": [d.timeout_step for d in ds],
        "result": [_json_or_none(d.result, d.status == "done") for d in ds],
        "error": [_json_or_none(d.error, d.error is not None) for d in ds],
        "reset": [d.reset_attempt for d in ds],
        "now": now,
    }
    landed = {
        row.id: Committed(row.id, row.status, row.queue) for row in run(conn, _COMMIT, params).all()
    }
    pairs = [(sig, x.version + 1) for x in items if x.instance_id in landed for sig in x.consumed]
    signal_sql.consume(conn, pairs, now)
    parked = [i for i, c in landed.items() if c.status == "awaiting"]
    if parked:
        for row in signal_sql.wake_satisfied(conn, parked, now):
            landed[row.id] = Committed(row.id, "available", row.queue)
    return landed


_LOCK_TIMEOUT = select(func.set_config("lock_timeout", param("value", "text"), True))


def set_lock_timeout(conn: Connection, milliseconds: int) -> None:
    """Bound how long this transaction waits for a row lock (``SET LOCAL lock_timeout``)."""
    run(conn, _LOCK_TIMEOUT, {"value": f"{int(milliseconds)}ms"})
