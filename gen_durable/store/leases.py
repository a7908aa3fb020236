"""The hot path's lease statements: extend held leases, release them.

Claims (which take leases) are :mod:`gen_durable.store.claims`. Statements are built once
with named parameters; each call only binds values.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, update

from gen_durable.store import concurrency
from gen_durable.store._common import NOW, I, param, run, unnest_params

_HELD = unnest_params(id="bigint", token="uuid")
# The rows are locked (skipping those someone else holds) in a self-read of the updated
# table: an alias says it is one (tests/store/test_statement_guard.py).
_LOCKABLE = I.alias("lockable")
_EXTEND = (
    update(I)
    .where(I.c.id == _HELD.c.id, I.c.lease_token == _HELD.c.token, I.c.status == "running")
    .where(
        I.c.id.in_(
            select(_LOCKABLE.c.id)
            .where(_LOCKABLE.c.id == func.any(param("id", "bigint", is_array=True)))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(lease_expires_at=NOW + param("lease", "interval"))
    .returning(I.c.id)
)
_STILL_HELD = select(I.c.id).where(
    I.c.id == _HELD.c.id, I.c.lease_token == _HELD.c.token, I.c.status == "running"
)


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
    params = {
        "id": [lease[0] for lease in leases],
        "token": [lease[1] for lease in leases],
        "lease": timedelta(seconds=lease_seconds),
        "now": now,
    }
    extended = set(run(conn, _EXTEND, params).scalars())
    missing = [lease for lease in leases if lease[0] not in extended]
    if not missing:
        return extended, set()
    still_held = set(
        run(
            conn,
            _STILL_HELD,
            {"id": [x[0] for x in missing], "token": [x[1] for x in missing]},
        ).scalars()
    )
    lost = {x[0] for x in missing} - still_held
    return extended, lost


_RELEASE = (
    update(I)
    .where(I.c.id == _HELD.c.id, I.c.lease_token == _HELD.c.token, I.c.status == "running")
    .values(
        status="available",
        attempt=func.greatest(I.c.attempt - 1, 0),
        run_at=NOW,
        updated_at=NOW,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    .returning(I.c.id, I.c.concurrency_key)
)


def release(
    conn: Connection, leases: Sequence[tuple[int, uuid.UUID]], now: datetime | None
) -> list[int]:
    """Give claims back (shutdown): runnable again, the attempt returned."""
    if not leases:
        return []
    params = {"id": [x[0] for x in leases], "token": [x[1] for x in leases], "now": now}
    rows = run(conn, _RELEASE, params).all()
    concurrency.release(conn, [r.concurrency_key for r in rows], now)
    return [r.id for r in rows]
