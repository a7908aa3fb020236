"""Concurrency keys: at most ``limit`` running instances per key, across all runners.

A claimer serialises per key with a transaction-scoped advisory lock (tried, never
waited for), counts what runs with that key in a fresh statement, and claims or blocks
each candidate. Whoever stops a keyed instance from running (a transition, the reaper, a
cancel, a shutdown release) takes the same lock — waiting for a claimer mid-decision —
and makes the oldest blocked instances of the key available again. Blocked instances
sit outside the picker's index, so they never hold up other work in their queue; a claim
that blocks a candidate blocks the key's next available rows with it (head-of-line: the
next claims would spend their slots on them one batch at a time).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, func, literal, select, true, union_all, update

from gen_durable.store import _fast, models
from gen_durable.store._common import NOW, I, param, run, unnest_params


def _lock_id(key: Any) -> Any:
    # One lock space per schema, so two deployments in one database never interfere.
    prefix = param("prefix", "text")
    return func.hashtextextended(prefix + key, literal(0))


def _prefix() -> str:
    return f"gen_durable:{models.schema_name()}:"


_KEYS = (
    func.unnest(param("keys", "text", is_array=True)).table_valued("key").render_derived(name="k")
)
_TRY_LOCK = select(_KEYS.c.key).where(func.pg_try_advisory_xact_lock(_lock_id(_KEYS.c.key)))
_WAIT_LOCK = select(func.count()).select_from(
    select(func.pg_advisory_xact_lock(_lock_id(_KEYS.c.key))).order_by(_KEYS.c.key).subquery()
)
_RUNNING = (
    select(I.c.concurrency_key, func.count().label("n"))
    .where(
        I.c.status == "running",
        I.c.concurrency_key == func.any(param("keys", "text", is_array=True)),
    )
    .group_by(I.c.concurrency_key)
)
_FULL = unnest_params(key="text", n="int")
# An alias: a self-read inside the UPDATE of the same table (tests/store/test_statement_guard.py).
_QUEUED = I.alias("queued")
BLOCK_AHEAD = 1000
"""At most this many rows of a full key are blocked along with a claim's candidates (the
next ones in the key's order): a bound on the claim's work, and so on how long a release
of the key may wait for the claim."""
_BEHIND = (
    select(_QUEUED.c.id)
    .where(
        _QUEUED.c.concurrency_key == _FULL.c.key,
        _QUEUED.c.status == "available",
        _QUEUED.c.concurrency_limit <= _FULL.c.n,
        _QUEUED.c.queue == param("queue", "text"),
        _QUEUED.c.fsm == func.any(param("fsms", "text", is_array=True)),
    )
    .order_by(_QUEUED.c.priority, _QUEUED.c.run_at, _QUEUED.c.id)
    .limit(BLOCK_AHEAD)
    .with_for_update(skip_locked=True)
    .lateral("behind")
)
_BLOCKED = union_all(
    select(func.unnest(param("ids", "bigint", is_array=True))),  # locked candidates
    select(_BEHIND.c.id).select_from(_FULL.join(_BEHIND, true())),
).scalar_subquery()
_BLOCK = (
    update(I)
    # ``= ANY(ARRAY(...))`` keeps primary-key lookups: an ``IN (subquery)`` of up to
    # BLOCK_AHEAD ids per key made the planner scan the whole table instead.
    .where(I.c.id == func.any(func.array(_BLOCKED)))
    .values(status="blocked", updated_at=NOW)
)
"""Blocks the candidates over their key's limit and, in the same statement, the rows of
those keys still available in the claim's queue (and classes) whose own limit is reached
as well, so that the next claims do not spend their slots on them (head-of-line). Rows
someone else holds locked are skipped, never waited for; a row inserted later is blocked
when a claim meets it."""


class Admission(NamedTuple):
    """What :func:`admit` decided about a claim's keyed candidates."""

    take: list[int]
    """The ids to claim (rate limits permitting)."""
    blocked: list[int]
    """The candidates over their key's limit: :func:`block` blocks them."""
    running: Counter[str]
    """Per key this claim holds the lock of: how many ran before the claim."""
    key_of: dict[int, str]
    """The key of each candidate admitted or blocked."""


def admit(conn: Connection, candidates: Sequence[Row[Any]]) -> Admission:
    """Decide on locked candidate rows (id, concurrency_key, concurrency_limit): those to
    claim, and those over their key's limit, which :func:`block` blocks.

    Candidates whose key another runner is deciding on right now are neither: they stay
    available for the next round. The lock attempts and the count of what runs travel in
    one round trip: the count, a statement of its own after them, sees every commit that
    came before the locks were granted.
    """
    take = [c.id for c in candidates if c.concurrency_key is None]
    keyed = [c for c in candidates if c.concurrency_key is not None]
    if not keyed:
        return Admission(take, [], Counter(), {})
    keys = sorted({c.concurrency_key for c in keyed})
    locked, counted = _fast.pipelined(
        conn, [(_TRY_LOCK, {"keys": keys, "prefix": _prefix()}), (_RUNNING, {"keys": keys})]
    )
    held = {row.key for row in locked}
    before = Counter({r.concurrency_key: r.n for r in counted if r.concurrency_key in held})
    running = before.copy()
    blocked: list[int] = []
    key_of: dict[int, str] = {}
    for c in keyed:
        if c.concurrency_key not in held:
            continue
        key_of[c.id] = c.concurrency_key
        if running[c.concurrency_key] < c.concurrency_limit:
            running[c.concurrency_key] += 1
            take.append(c.id)
        else:
            blocked.append(c.id)
    return Admission(take, blocked, before, key_of)


def block(
    admission: Admission,
    taken: Collection[int],
    queue: str,
    fsms: Sequence[str],
    now: datetime | None,
) -> _fast.Call | None:
    """The statement that blocks the admission's blocked candidates and the rows of their
    keys behind them (see ``_BLOCK``), once ``taken`` (the ids this claim leases) is known;
    None when no candidate was over its limit.

    A key's rows are blocked while what runs with it — before the claim, and ``taken``
    by it — reaches their own limit. The caller sends the statement in the claim's
    transaction, before anything that could pick those rows again.
    """
    if not admission.blocked:
        return None
    key_of = admission.key_of
    full = sorted({key_of[i] for i in admission.blocked})
    running = admission.running + Counter(key_of[i] for i in taken if i in key_of)
    params = {
        "ids": sorted(admission.blocked),
        "key": full,
        "n": [running[k] for k in full],
        "queue": queue,
        "fsms": list(fsms),
        "now": now,
    }
    return _BLOCK, params


_FREED = unnest_params(key="text", n="int")
# An alias: a self-read inside the UPDATE of the same table (tests/store/test_statement_guard.py).
_WAITING = I.alias("waiting")
_NEXT = (
    select(_WAITING.c.id)
    .where(_WAITING.c.concurrency_key == _FREED.c.key, _WAITING.c.status == "blocked")
    .order_by(_WAITING.c.priority, _WAITING.c.run_at, _WAITING.c.id)
    .limit(_FREED.c.n)
    .with_for_update(skip_locked=True)
    .lateral("nxt")
)
_UNBLOCK = (
    update(I)
    .where(I.c.id.in_(select(_NEXT.c.id).select_from(_FREED.join(_NEXT, literal(True)))))
    .values(status="available", updated_at=NOW)
    .returning(I.c.id, I.c.queue)
)


def release(
    conn: Connection, keys: Iterable[str | None], now: datetime | None
) -> Sequence[Row[Any]]:
    """Slots were freed (one per key listed): unblock as many waiting instances.

    Call it last in the transaction that stopped the keyed instances from running.
    Returns (id, queue) of the instances made available.
    """
    freed = Counter(k for k in keys if k is not None)
    if not freed:
        return []
    names = sorted(freed)
    run(conn, _WAIT_LOCK, {"keys": names, "prefix": _prefix()})
    return run(conn, _UNBLOCK, {"key": names, "n": [freed[k] for k in names], "now": now}).all()


def unstrand(conn: Connection, limit: int, now: datetime | None) -> Sequence[Row[Any]]:
    """Safety net: keys with blocked instances and nothing running get one unblocked."""
    keys = list(
        run(
            conn,
            select(I.c.concurrency_key)
            .where(I.c.status == "blocked")
            .group_by(I.c.concurrency_key)
            .limit(limit),
        ).scalars()
    )
    if not keys:
        return []
    busy = set(run(conn, _RUNNING, {"keys": keys}).scalars())
    idle = [k for k in keys if k not in busy]
    return release(conn, idle, now) if idle else []
