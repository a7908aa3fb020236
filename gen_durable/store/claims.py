"""The hot path's claim: lease a batch of runnable rows, in a transaction or at once.

Statements are built once with named parameters; each call only binds values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Executable,
    Text,
    cast,
    false,
    func,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)

from gen_durable.domain.versioning import SEP
from gen_durable.store import _fast, concurrency, queues, ratelimits
from gen_durable.store._common import NOW, I, param

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


def _claim_statement(leased: ColumnElement[bool], returned: ColumnElement[bool]) -> Executable:
    """Lock the candidates; lease those ``leased`` admits; return them (``taken`` true) with
    the candidates ``returned`` names (``taken`` false)."""
    taken = (
        update(I)
        .where(I.c.id == _PICK.c.id, leased)
        .values(**_LEASED)
        .returning(*CLAIM_COLUMNS, *_LIMITED)
        .cte("taken")
    )
    both = union_all(
        select(*taken.c, true().label("taken")),
        select(*_PICK.c, false().label("taken")).where(returned),
    )
    return _fast.inline(both, "limit")


_CLAIM = _claim_statement(_FREE & _ALLOWED, ~_FREE & _ALLOWED)
"""One statement: lock up to ``limit`` candidates (``FOR UPDATE SKIP LOCKED``), lease
those under no concurrency key or rate limit, and return them with the locked candidates
that still need admission (``taken`` false)."""

_AT_ONCE = _FREE & queues.UNLIMITED
_CLAIM_AT_ONCE = _claim_statement(_AT_ONCE, ~_AT_ONCE)
"""The claim as a transaction of its own (:func:`claim_at_once`): lease the candidates
under no concurrency key or rate limit in a queue without a global limit; return the
others, which only a claim in a transaction may admit."""

_TAKE = (
    update(I)
    # No status condition: these rows are locked by this transaction since the candidate
    # query, and one here would steer the planner to the picker's index (the backlog).
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)))
    .values(**_LEASED)
    .returning(*CLAIM_COLUMNS)
)


_SETTINGS = {"synchronous_commit": "off", "plan_cache_mode": "force_generic_plan"}
"""What a claim runs with: for its transaction (:data:`_CLAIM_SETTINGS`), or for a claim
session's whole life (:func:`begin_claim_session`)."""

_CLAIM_SETTINGS = select(
    *(func.set_config(name, value, True) for name, value in _SETTINGS.items()),
    queues.LOCK_LIMITED.scalar_subquery(),
)
"""The claim's first statement: an asynchronous commit (see :func:`claim`); the claim's
generic plan from its first execution (planning it anew for each claim cost the server
more than running it; the plan guards check the generic plan's use of the indexes); and
the lock of a queue with a global concurrency limit (:data:`queues.LOCK_LIMITED`)."""


_SESSION = "gen_durable.claim_session"
_SET = text(
    "WITH s AS MATERIALIZED (SELECT name, value, current_setting(name) AS was "
    "FROM unnest(CAST(:names AS text[]), CAST(:values AS text[])) AS s(name, value)) "
    "SELECT name, was, set_config(name, value, false) FROM s"
)


def begin_claim_session(conn: Connection) -> None:
    """Make ``conn`` a claim session: the claim's settings (:data:`_SETTINGS`) for the
    whole session, so that :func:`claim_at_once` can claim in a single statement.

    Not on a connection that prepares no statements (behind PgBouncer in transaction
    pooling): a session setting would reach other clients' transactions there.
    :func:`end_claim_session` puts back the values they replaced; call both outside a
    transaction.
    """
    if not _fast.prepares(conn):
        return
    conn.info[_SESSION] = _set(conn, _SETTINGS)


def end_claim_session(conn: Connection) -> None:
    """Give the session's settings back the values they had (before ``conn`` goes back to
    its pool)."""
    replaced = conn.info.pop(_SESSION, None)
    if replaced:
        _set(conn, replaced)


def _set(conn: Connection, settings: dict[str, str]) -> dict[str, str]:
    """Set ``settings`` for the session; returns the values they replaced."""
    names = list(settings)
    with conn.begin():
        rows = conn.execute(_SET, {"names": names, "values": [settings[n] for n in names]})
        return {row[0]: row[1] for row in rows}


class ClaimRequest(NamedTuple):
    """What a claim asks for: up to ``limit`` runnable instances of ``fsms`` in ``queue``,
    leased to ``owner`` for ``lease_seconds``; ``known``: see :func:`claim`."""

    queue: str
    fsms: Sequence[str]
    limit: int
    owner: str
    lease_seconds: float
    now: datetime | None = None
    known: tuple[Sequence[str], Sequence[str]] | None = None

    def params(self) -> dict[str, Any]:
        """The claim statements' parameters."""
        known = self.known
        return {
            "queue": self.queue,
            "fsms": list(self.fsms),
            "limit": self.limit,
            "owner": self.owner,
            "lease": timedelta(seconds=self.lease_seconds),
            "now": self.now,
            "steps": None if known is None else list(known[0]),
            "versions": None if known is None else list(known[1]),
        }


def claim_at_once(conn: Connection, request: ClaimRequest) -> tuple[list[Any], bool] | None:
    """:func:`claim` as one statement committed as it completes: one round trip, with no
    BEGIN or COMMIT of its own, and no lock held past it.

    Leases only candidates no admission applies to (no concurrency key or rate limit, a
    queue without a global concurrency limit); returns them, in priority then FIFO
    order, and whether it found others, which only a claim in a transaction may admit.
    None when ``conn`` is not a claim session (:func:`begin_claim_session`): claim in a
    transaction. ``conn``'s transaction must not have begun on the server.
    """
    if not conn.info.get(_SESSION):
        return None
    picked = _fast.committed(conn, _CLAIM_AT_ONCE, request.params())
    rows = [r for r in picked if r.taken]
    rows.sort(key=lambda r: (r.priority, r.run_at, r.id))
    return rows, len(rows) < len(picked)


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
    """Claim up to ``limit`` runnable instances of known classes, in ``conn``'s
    transaction (:func:`claim_requested` with these fields)."""
    request = ClaimRequest(queue, fsms, limit, owner, lease_seconds, now, known)
    return claim_requested(conn, request, limit_of)


def claim_requested(
    conn: Connection, request: ClaimRequest, limit_of: ratelimits.LimitOf | None = None
) -> list[Any]:
    """Claim what ``request`` asks for, in ``conn``'s transaction.

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
    params = request.params()
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
