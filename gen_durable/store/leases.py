"""The hot path's lease statements: claim a batch, extend leases, release them.

Statements are built once with named parameters; each call only binds values.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Text, cast, false, func, select, true, tuple_, union_all, update

from gen_durable.domain.versioning import SEP
from gen_durable.store import _fast, concurrency, queues, ratelimits
from gen_durable.store._common import NOW, I, param, run, unnest_params

CLAIM_COLUMNS = (
    I.c.id,
    I.c.fsm,
    I.c.queue,
    I.c.priority,
    I.c.step,
    # As text: each use of it parses a copy of its own (no deep copy of parsed JSON).
    cast(I.c.state, Text).label("state_text"),
    I.c.attempt,
    I.c.max_attempts,
    I.c.version,
    I.c.lease_token,
    I.c.correlation_key,
    I.c.parent_id,
    I.c.await_names,
    I.c.await_all,
    I.c.await_limit,
    I.c.await_pack,
    I.c.run_at,
    I.c.children_from,
    I.c.concurrency_key,
    I.c.trace_context,
    I.c.state_version,
)

_LEASED = {
    "status": "running",
    "lease_token": func.gen_random_uuid(),
    "lease_owner": param("owner", "text"),
    "lease_expires_at": NOW + param("lease", "interval"),
    "attempt": I.c.attempt + 1,
    "updated_at": NOW,
}
_LIMITED = (I.c.concurrency_limit, I.c.rate_key, I.c.rate_weight)
"""What admission needs beyond the claim's columns (concurrency keys and rate limits)."""

_PICK = (
    select(*CLAIM_COLUMNS, *_LIMITED)
    .where(
        I.c.queue == param("queue", "text"),
        I.c.status == "available",
        I.c.fsm == func.any(param("fsms", "text", is_array=True)),
        queues.NOT_PAUSED,
        # Rolling deploys: only rows at a step, and in a state version, the runner's code
        # knows (a NULL array: no filter, for callers that claim by hand).
        func.coalesce(
            I.c.fsm + SEP + I.c.step == func.any(param("steps", "text", is_array=True)), true()
        ),
        func.coalesce(
            I.c.fsm + SEP + cast(I.c.state_version, Text)
            == func.any(param("versions", "text", is_array=True)),
            true(),
        ),
    )
    .order_by(I.c.priority, I.c.run_at, I.c.id)
    .limit(param("limit", "int"))
    .with_for_update(of=I, skip_locked=True)
    .cte("pick")
)
_AHEAD = _PICK.alias("ahead")
_PLACE = (
    select(func.count())
    .where(
        tuple_(_AHEAD.c.priority, _AHEAD.c.run_at, _AHEAD.c.id)
        < tuple_(_PICK.c.priority, _PICK.c.run_at, _PICK.c.id)
    )
    .scalar_subquery()
)
_ALLOWED = _PLACE < queues.ALLOWANCE
"""Within what the queue's global concurrency limit leaves (the candidates ahead of this
one are counted); always true for a queue without one."""
_FREE = _PICK.c.concurrency_key.is_(None) & _PICK.c.rate_key.is_(None)
_TAKEN = (
    update(I)
    .where(I.c.id == _PICK.c.id, _FREE, _ALLOWED)
    .values(**_LEASED)
    .returning(*CLAIM_COLUMNS, *_LIMITED)
    .cte("taken")
)
_CLAIM = _fast.inline(
    union_all(
        select(*_TAKEN.c, true().label("taken")),
        select(*_PICK.c, false().label("taken")).where(~_FREE, _ALLOWED),
    ),
    "limit",
)
"""One statement: lock up to ``limit`` candidates (``FOR UPDATE SKIP LOCKED``), lease
those under no concurrency key or rate limit, and return them with the locked candidates
that still need admission (``taken`` false)."""

_TAKE = (
    update(I)
    # No status condition: these rows are locked by this transaction since the candidate
    # query, and one here would steer the planner to the picker's index (the backlog).
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)))
    .values(**_LEASED)
    .returning(*CLAIM_COLUMNS)
)


_CLAIM_SETTINGS = select(
    func.set_config("synchronous_commit", "off", True),
    func.set_config("plan_cache_mode", "force_generic_plan", True),
    queues.LOCK_LIMITED.scalar_subquery(),
)
"""The claim's first statement: an asynchronous commit (see :func:`claim`); the claim's
generic plan from its first execution (planning it anew for each claim cost the server
more than running it; the plan guards check the generic plan's use of the indexes); and
the lock of a queue with a global concurrency limit (:data:`queues.LOCK_LIMITED`)."""


def claim(
    conn: Connection,
    queue: str,
    fsms: Sequence[str],
    limit: int,
    owner: str,
    lease_seconds: float,
    now: datetime | None,
    limit_of: ratelimits.LimitOf | None = None,
    known: tuple[Sequence[str], Sequence[str]] | None = None,
) -> list[Any]:
    """Claim up to ``limit`` runnable instances of known classes.

    Candidates are locked with ``FOR UPDATE SKIP LOCKED`` (runners claim side by side),
    at most as many as the queue's global concurrency limit leaves, if it has one;
    those without concurrency key or rate limit are leased by the same statement, sent
    with the transaction's BEGIN in one round trip. Keyed ones are then admitted or
    blocked by their concurrency key, rate-limited ones take their tokens or wait, and
    the admitted rows are leased in one more statement (``limit_of`` gives each class
    step's rate limit: the caller knows the classes; without it, a rate-limited
    candidate raises ValueError). A candidate blocked by its key blocks the rows of
    the key behind it too, and the slots it leaves are offered once more to the rows
    behind them, in the same round trip as the lease (so a backlog on a full key
    costs one claim, not one claim per batch of its rows). The attempt is counted
    here, so that a step that kills its worker cannot loop forever. Rows come back in
    priority, then FIFO order.

    The claim's transaction commits without waiting for its WAL flush: if the database
    crashes before the flush, the claim is lost and the row is runnable as before, and
    the step that ran meanwhile is fenced out at its commit — at-least-once either way.

    ``known`` is what the runner's code knows: ``class SEP step`` for every declared
    or aliased step and ``class SEP version`` for every state version it can load;
    rows outside it are left for a runner that knows them (None: no such filter).
    """
    params = {
        "queue": queue,
        "fsms": list(fsms),
        "limit": limit,
        "owner": owner,
        "lease": timedelta(seconds=lease_seconds),
        "now": now,
        "steps": None if known is None else list(known[0]),
        "versions": None if known is None else list(known[1]),
    }
    calls: list[_fast.Call] = [
        (_CLAIM_SETTINGS, params),
        (_CLAIM, params),
    ]
    picked = _fast.pipelined(conn, calls)[-1]
    rows, behind = _admit(conn, picked, params, limit_of, pick_again=True)
    if behind is not None:
        rows += _admit(conn, behind, params, limit_of, pick_again=False)[0]
    rows.sort(key=lambda r: (r.priority, r.run_at, r.id))
    return rows


def _admit(
    conn: Connection,
    picked: list[Any],
    params: dict[str, Any],
    limit_of: ratelimits.LimitOf | None,
    pick_again: bool,
) -> tuple[list[Any], list[Any] | None]:
    """The picked rows leased, those that needed admission included if admitted; and,
    with ``pick_again``, when some were blocked and slots are left: the candidates
    picked for those slots (picked after the block and the lease, in their round trip)."""
    rows = [r for r in picked if r.taken]
    waiting = [r for r in picked if not r.taken]
    if not waiting:
        return rows, None
    admission = concurrency.admit(conn, waiting)
    allowed = set(admission.take)
    ids = ratelimits.admit(conn, [c for c in waiting if c.id in allowed], params["now"], limit_of)
    block = concurrency.block(admission, ids, params["queue"], params["fsms"], params["now"])
    calls = [block] if block is not None else []
    if ids:
        calls.append((_TAKE, {**params, "ids": ids}))
    left = params["limit"] - len(rows) - len(ids)
    again = pick_again and block is not None and left > 0
    if again:
        calls.append((_CLAIM, {**params, "limit": left}))
    sent = _fast.pipelined(conn, calls) if calls else []
    if ids:
        rows += sent[-2 if again else -1]
    return rows, sent[-1] if again else None


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
