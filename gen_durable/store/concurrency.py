"""Concurrency keys: at most ``limit`` running instances per key, across all runners.

A claimer serialises per key with a transaction-scoped advisory lock (tried, never
waited for), counts what runs with that key in a fresh statement, and claims or blocks
each candidate. Whoever stops a keyed instance from running (a transition, the reaper, a
cancel, a shutdown release) takes the same lock — waiting for a claimer mid-decision —
and makes the oldest blocked instances of the key available again. Blocked instances
sit outside the picker's index, so they never hold up other work in their queue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, literal, select, update

from gen_durable.store import models
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
_BLOCK = (
    update(I)
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)))  # locked candidates
    .values(status="blocked", updated_at=NOW)
)


def admit(conn: Connection, candidates: Sequence[Row[Any]], now: datetime | None) -> list[int]:
    """Of locked candidate rows (id, concurrency_key, concurrency_limit), the ids to claim.

    Keyed candidates over their key's limit are blocked; those whose key another runner is
    deciding on right now stay available for the next round.
    """
    take = [c.id for c in candidates if c.concurrency_key is None]
    keyed = [c for c in candidates if c.concurrency_key is not None]
    if not keyed:
        return take
    keys = sorted({c.concurrency_key for c in keyed})
    held = set(run(conn, _TRY_LOCK, {"keys": keys, "prefix": _prefix()}).scalars())
    running: Counter[str] = Counter()
    if held:
        for row in run(conn, _RUNNING, {"keys": sorted(held)}).all():
            running[row.concurrency_key] = row.n
    blocked: list[int] = []
    for c in keyed:
        if c.concurrency_key not in held:
            continue
        if running[c.concurrency_key] < c.concurrency_limit:
            running[c.concurrency_key] += 1
            take.append(c.id)
        else:
            blocked.append(c.id)
    if blocked:
        run(conn, _BLOCK, {"ids": blocked, "now": now})
    return take


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
