"""The hot path's lease statements: claim a batch, extend leases, release them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from gen_durable.store._common import I, array, db_now, run, seconds, unnest

CLAIM_COLUMNS = (
    I.c.id,
    I.c.fsm,
    I.c.queue,
    I.c.priority,
    I.c.step,
    I.c.state,
    I.c.attempt,
    I.c.max_attempts,
    I.c.version,
    I.c.lease_token,
    I.c.correlation_key,
    I.c.parent_id,
    I.c.await_names,
    I.c.await_all,
    I.c.await_limit,
    I.c.run_at,
)


def claim(
    conn: Connection,
    queue: str,
    fsms: Sequence[str],
    limit: int,
    owner: str,
    lease_seconds: float,
    now: datetime | None,
) -> list[Row[Any]]:
    """Claim up to ``limit`` runnable instances of known classes in one statement.

    ``FOR UPDATE SKIP LOCKED`` lets runners claim side by side; the attempt is counted
    here so that a step that kills its worker cannot loop forever. Rows come back in
    priority, then FIFO order.
    """
    t_now = db_now(now)
    picked = (
        select(I.c.id)
        .where(
            I.c.queue == queue,
            I.c.status == "available",
            I.c.fsm == func.any(array(fsms, "text")),
        )
        .order_by(I.c.priority, I.c.run_at, I.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(I)
        .where(I.c.id.in_(picked))
        .values(
            status="running",
            lease_token=func.gen_random_uuid(),
            lease_owner=owner,
            lease_expires_at=t_now + seconds(lease_seconds),
            attempt=I.c.attempt + 1,
            updated_at=t_now,
        )
        .returning(*CLAIM_COLUMNS)
    )
    rows = list(run(conn, stmt).all())
    rows.sort(key=lambda r: (r.priority, r.run_at, r.id))
    return rows


def extend(
    conn: Connection,
    leases: Sequence[tuple[int, uuid.UUID]],
    lease_seconds: float,
    now: datetime | None,
) -> tuple[set[int], set[int]]:
    """Extend held leases in one statement; returns (extended ids, lost ids).

    A row locked by someone else (a signal sender in a long transaction) is skipped, not
    waited for: it is neither extended nor lost this round.
    """
    if not leases:
        return set(), set()
    ids = [lease[0] for lease in leases]
    t = unnest(id=(ids, "bigint"), token=([lease[1] for lease in leases], "uuid"))
    lockable = (
        select(I.c.id)
        .where(I.c.id == func.any(array(ids, "bigint")))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(I)
        .where(I.c.id == t.c.id, I.c.lease_token == t.c.token, I.c.status == "running")
        .where(I.c.id.in_(lockable))
        .values(lease_expires_at=db_now(now) + seconds(lease_seconds))
        .returning(I.c.id)
    )
    extended = set(run(conn, stmt).scalars())
    missing = [lease for lease in leases if lease[0] not in extended]
    if not missing:
        return extended, set()
    m = unnest(id=([x[0] for x in missing], "bigint"), token=([x[1] for x in missing], "uuid"))
    still_held = set(
        run(
            conn,
            select(I.c.id).where(
                I.c.id == m.c.id, I.c.lease_token == m.c.token, I.c.status == "running"
            ),
        ).scalars()
    )
    lost = {x[0] for x in missing} - still_held
    return extended, lost


def release(
    conn: Connection, leases: Sequence[tuple[int, uuid.UUID]], now: datetime | None
) -> list[int]:
    """Give claims back (shutdown): runnable again, the attempt returned."""
    if not leases:
        return []
    t = unnest(id=([x[0] for x in leases], "bigint"), token=([x[1] for x in leases], "uuid"))
    t_now = db_now(now)
    stmt = (
        update(I)
        .where(I.c.id == t.c.id, I.c.lease_token == t.c.token, I.c.status == "running")
        .values(
            status="available",
            attempt=func.greatest(I.c.attempt - 1, 0),
            run_at=t_now,
            updated_at=t_now,
            lease_token=None,
            lease_owner=None,
            lease_expires_at=None,
        )
        .returning(I.c.id)
    )
    return list(run(conn, stmt).scalars())
