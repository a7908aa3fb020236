"""Statements of versioned state and step moves: park a row whose upgrade failed, upgrade
rows eagerly in batches, move a row to another step, and find the rows no live runner
can run (``ls --stuck``).

A *parked* row is ``scheduled`` with no ``run_at``: no claim, timer or GC touches it,
and nothing else writes that pair.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from gen_durable.store import concurrency
from gen_durable.store._common import NOW, I, N, param, recordset_param, run

PARKED = and_(I.c.status == "scheduled", I.c.run_at.is_(None))
"""A row parked by a failing upgrade (until an operator upgrades or moves it)."""

_PARK = (
    update(I)
    .where(
        I.c.id == param("id", "bigint"),
        I.c.lease_token == param("token", "uuid"),
        I.c.status == "running",
    )
    .values(
        status="scheduled",
        run_at=None,
        error=cast(param("error", "text"), JSONB),
        # No attempt is used: the step never ran.
        attempt=func.greatest(I.c.attempt - 1, 0),
        updated_at=NOW,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(I.c.concurrency_key)
)


def park(
    conn: Connection, instance_id: int, token: uuid.UUID, error: Any, now: datetime | None
) -> bool:
    """Park a claimed row whose state could not be upgraded: its JSON and state version
    stay, ``error`` is stored, its lease and concurrency slot are freed. Fenced by the
    lease token like a step's commit; False when the lease was lost."""
    params = {"id": instance_id, "token": token, "error": json.dumps(error), "now": now}
    row = run(conn, _PARK, params).one_or_none()
    if row is None:
        return False
    concurrency.release(conn, [row.concurrency_key], now)
    return True


class Outdated(NamedTuple):
    """A row whose state is older than its class's code (for ``upgrade-state``)."""

    id: int
    step: str
    state: Any
    state_version: int
    queue: str


_OUTDATED = I.c.fsm == param("fsm", "text"), I.c.state_version < param("version", "int")
_UNFINISHED_IDLE = I.c.finished_at.is_(None), I.c.status != "running"
_LOCK_OUTDATED = (
    select(*(I.c[name] for name in Outdated._fields))
    .where(*_OUTDATED, *_UNFINISHED_IDLE, I.c.id > param("after", "bigint"))
    .order_by(I.c.id)
    .limit(param("limit", "int"))
    .with_for_update(skip_locked=True)
)
_COUNT_OUTDATED = select(func.count()).where(*_OUTDATED, I.c.finished_at.is_(None))


def count_outdated(conn: Connection, fsm: str, version: int) -> int:
    """Unfinished rows of ``fsm`` in a state version below ``version``."""
    return int(run(conn, _COUNT_OUTDATED, {"fsm": fsm, "version": version}).scalar_one())


def lock_outdated(
    conn: Connection, fsm: str, version: int, after_id: int, limit: int
) -> list[Outdated]:
    """The next ``limit`` outdated rows after ``after_id``, locked for this transaction.

    Rows that are running, or locked by a runner's claim or commit
    (``FOR UPDATE SKIP LOCKED``), are skipped: their runner upgrades them on load.
    """
    params = {"fsm": fsm, "version": version, "after": after_id, "limit": limit}
    return list(map(Outdated._make, run(conn, _LOCK_OUTDATED, params)))


_NEW = recordset_param("rows", id="bigint", state="jsonb")
_WRITE_BACK = (
    update(I)
    .where(I.c.id == _NEW.c.id, I.c.status != "running")
    .values(
        state=func.coalesce(_NEW.c.state, literal("null", JSONB)),
        state_version=param("version", "int"),
        # A row parked by a failing upgrade runs again, now that it loads.
        status=case((PARKED, "available"), else_=I.c.status),
        error=case((PARKED, None), else_=I.c.error),
        run_at=case((PARKED, NOW), else_=I.c.run_at),
        updated_at=NOW,
    )
    .returning(I.c.id, I.c.queue)
)


def write_upgraded(
    conn: Connection, rows: Sequence[tuple[int, str]], version: int, now: datetime | None
) -> list[Any]:
    """Write back rows locked by :func:`lock_outdated` with their upgraded JSON text (id,
    state) in ``version``; a parked one becomes runnable. Returns (id, queue) of each."""
    if not rows:
        return []
    batch = ",".join(f'{{"id": {i}, "state": {text}}}' for i, text in rows)
    params = {"rows": f"[{batch}]", "version": version, "now": now}
    return list(run(conn, _WRITE_BACK, params))


class Movable(NamedTuple):
    """An unfinished row as ``move`` sees it, locked."""

    id: int
    fsm: str
    step: str
    status: str
    queue: str
    state_version: int
    join_policy: str | None


_LOCK_ONE = (
    select(*(I.c[name] for name in Movable._fields))
    .where(I.c.id == param("id", "bigint"), I.c.finished_at.is_(None))
    .with_for_update()
)


def lock_movable(conn: Connection, instance_id: int) -> Movable | None:
    """The unfinished row ``instance_id``, locked (waits for a claim or commit on it)."""
    row = run(conn, _LOCK_ONE, {"id": instance_id}).one_or_none()
    return None if row is None else Movable._make(row)


_MOVE = (
    update(I)
    .where(I.c.id == param("id", "bigint"), I.c.status != "running", I.c.finished_at.is_(None))
    .values(
        step=param("step", "text"),
        # Blocked on its concurrency key it stays so; otherwise it runs the step now.
        status=case((I.c.status == "blocked", "blocked"), else_="available"),
        run_at=NOW,
        error=case((PARKED, None), else_=I.c.error),
        attempt=0,
        await_names=None,
        await_all=False,
        await_limit=None,
        await_pack=None,
        timeout_step=None,
        updated_at=NOW,
    )
    .returning(I.c.id, I.c.queue)
)


def move(conn: Connection, instance_id: int, step: str, now: datetime | None) -> bool:
    """Put a locked, idle, unfinished row at ``step``, runnable now (its await, backoff
    and attempts cleared). False when it is running or finished."""
    params = {"id": instance_id, "step": step, "now": now}
    return run(conn, _MOVE, params).one_or_none() is not None


def stuck(heartbeat_timeout: float = 60.0) -> ColumnElement[bool]:
    """The ``ls --stuck`` filter: unfinished, idle rows that are parked, or that live
    runners of their class serve but none knows their step or state version. A runner
    of a version before migration 0014 records nothing and counts as knowing all."""
    live = N.c.heartbeat_at > func.now() - literal(timedelta(seconds=heartbeat_timeout))
    of_class = and_(live, I.c.fsm == func.any(N.c.fsms))
    mine = N.c.known[I.c.fsm]
    knows = or_(
        N.c.known.is_(None),
        and_(
            mine["steps"].has_key(I.c.step),
            mine["versions"].contains(func.to_jsonb(I.c.state_version)),
        ),
    )
    served = exists().where(of_class)
    understood = exists().where(of_class, knows)
    idle = and_(I.c.finished_at.is_(None), I.c.status != "running")
    return and_(idle, or_(PARKED, and_(served, not_(understood))))


class Live(NamedTuple):
    """An unfinished row as the dry run of an upgrade reads it."""

    id: int
    step: str
    timeout_step: str | None
    state: Any
    state_version: int


_LIVE = (
    select(*(I.c[name] for name in Live._fields))
    .where(I.c.fsm == param("fsm", "text"), I.c.finished_at.is_(None))
    .order_by(I.c.id)
)


def live_rows(conn: Connection, fsm: str, limit: int | None) -> list[Live]:
    """The unfinished rows of ``fsm``, oldest first (at most ``limit``; None: all)."""
    stmt = _LIVE if limit is None else _LIVE.limit(limit)
    return list(map(Live._make, run(conn, stmt, {"fsm": fsm})))


_KNOWN = select(N.c.known[param("fsm", "text")]).where(
    N.c.heartbeat_at > func.now() - param("stale", "interval"),
    N.c.known.is_not(None),
)


def known_by_live_runners(
    conn: Connection, fsm: str, heartbeat_timeout: float = 60.0
) -> list[dict[str, Any]]:
    """What the live runners' code knows of ``fsm`` (``versions``, ``steps``), one entry
    per runner that records it and knows the class."""
    params = {"fsm": fsm, "stale": timedelta(seconds=heartbeat_timeout)}
    return [k for k in run(conn, _KNOWN, params).scalars() if isinstance(k, dict)]
