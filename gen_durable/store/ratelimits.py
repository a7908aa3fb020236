"""Rate-limit buckets: taken from at claim time, put into debt by ``RateLimited``.

A claim locks the buckets its candidates need (in key order, briefly), refills them by
the time elapsed in database time, and admits candidates while tokens last. A candidate
that must wait becomes ``scheduled`` until its bucket will hold enough tokens: it uses
no attempt and keeps no picker busy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Row, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.domain.ratelimit import RateLimit, refill, wait_for
from gen_durable.store import models
from gen_durable.store._common import NOW, I, param, run, unnest_params

B = models.rate_buckets

_LIMIT = {"rate": "float", "period": "float", "burst": "float"}
"""The limit a bucket row records (for ``why``: its refill, told without the class)."""
_NEW = unnest_params(key="text", tokens="float", **_LIMIT)
_ENSURE = (
    pg_insert(B)
    .from_select(
        ["key", "tokens", "updated_at", *_LIMIT],
        select(_NEW.c.key, _NEW.c.tokens, NOW, *(_NEW.c[name] for name in _LIMIT)),
    )
    .on_conflict_do_nothing(index_elements=[B.c.key])
)
_LOCK = (
    select(B.c.key, B.c.tokens, B.c.updated_at, B.c.debt_until, NOW.label("db_now"))
    .where(B.c.key == func.any(param("key", "text", is_array=True)))
    .order_by(B.c.key)
    .with_for_update()
)
_SAVE_T = unnest_params(key="text", tokens="float", **_LIMIT)
# A claim whose transaction began before the last one that refilled the bucket (it got to
# the lock second) is refilled by nothing; it must not wind the bucket's clock back either,
# or the next claim is credited that stretch of time a second time.
_SAVE = (
    update(B)
    .where(B.c.key == _SAVE_T.c.key)
    .values(
        tokens=_SAVE_T.c.tokens,
        updated_at=func.greatest(B.c.updated_at, NOW),
        # The limit as the class defines it now (a deploy may change it).
        **{name: _SAVE_T.c[name] for name in _LIMIT},
    )
)
_LATER = unnest_params(id="bigint", wait="interval")
_DEFER = (
    update(I)
    .where(I.c.id == _LATER.c.id)  # candidates this claim holds locked
    .values(status="scheduled", run_at=NOW + _LATER.c.wait, updated_at=NOW)
)


LimitOf = Callable[[str, str], RateLimit | None]
"""The rate limit of a class's step (class registry name, step name), or None: the
caller's knowledge of the classes, so that the storage layer needs none."""


def admit(
    conn: Connection,
    candidates: Sequence[Row[Any]],
    now: datetime | None,
    limit_of: LimitOf | None,
) -> list[int]:
    """Of locked candidates (id, fsm, step, rate_key, rate_weight), the ids to claim.

    The others wait (``scheduled``) until their bucket can pay for them; within one
    bucket, candidates are served first come, first served.
    """
    limits: dict[str, RateLimit] = {}
    for c in candidates:
        if c.rate_key is None:
            continue
        if limit_of is None:
            raise ValueError("a rate-limited candidate, and no limit_of to admit it by")
        limit = limit_of(c.fsm, c.step)
        if limit is not None:
            limits[c.rate_key] = limit
    if not limits:
        return [c.id for c in candidates]
    keys = sorted(limits)
    recorded = {
        "rate": [limits[k].rate for k in keys],
        "period": [limits[k].per for k in keys],
        "burst": [limits[k].burst for k in keys],
    }
    first = {"key": keys, "tokens": [limits[k].burst for k in keys], **recorded}
    run(conn, _ENSURE, {**first, "now": now})
    tokens: dict[str, float] = {}
    wait_debt: dict[str, float] = {}
    for b in run(conn, _LOCK, {"key": keys, "now": now}).all():
        elapsed = (b.db_now - b.updated_at).total_seconds()
        tokens[b.key] = refill(b.tokens, elapsed, limits[b.key])
        if b.debt_until is not None and b.debt_until > b.db_now:
            wait_debt[b.key] = (b.debt_until - b.db_now).total_seconds()
    take: list[int] = []
    later: dict[int, float] = {}
    stalled: set[str] = set()
    owed: dict[str, float] = {}
    for c in candidates:
        key = c.rate_key
        if key not in limits:
            take.append(c.id)
            continue
        weight = c.rate_weight or 1.0
        if key not in stalled and key not in wait_debt and tokens[key] >= weight:
            tokens[key] -= weight
            take.append(c.id)
            continue
        stalled.add(key)  # first come, first served within a bucket
        # Each waits for its place in line, not all for the first token: they would come
        # back together and all but one be put back again.
        owed[key] = owed.get(key, 0.0) + weight
        later[c.id] = max(wait_debt.get(key, 0.0), wait_for(tokens[key], owed[key], limits[key]))
    run(conn, _SAVE, {"key": keys, "tokens": [tokens[k] for k in keys], **recorded, "now": now})
    if later:
        ids = sorted(later)
        waits = [timedelta(seconds=max(later[i], 0.001)) for i in ids]
        run(conn, _DEFER, {"id": ids, "wait": waits, "now": now})
    return take


_OWED = unnest_params(key="text", wait="interval")
_DEBT_INSERT = pg_insert(B).from_select(
    ["key", "tokens", "updated_at", "debt_until"],
    select(_OWED.c.key, literal(0.0, B.c.tokens.type), NOW, NOW + _OWED.c.wait),
)
_DEBT = _DEBT_INSERT.on_conflict_do_update(
    index_elements=[B.c.key],
    set_={
        "tokens": 0.0,
        "updated_at": func.greatest(B.c.updated_at, _DEBT_INSERT.excluded.updated_at),
        "debt_until": func.greatest(
            func.coalesce(B.c.debt_until, _DEBT_INSERT.excluded.debt_until),
            _DEBT_INSERT.excluded.debt_until,
        ),
    },
)


def indebt(conn: Connection, debts: Sequence[tuple[str, float]], now: datetime | None) -> None:
    """The remote side refused: empty these buckets and hold them until ``retry_after``.

    Several refusals of one bucket in a commit group become one debt, the longest: an
    upsert may not touch a row twice.
    """
    longest: dict[str, float] = {}
    for key, wait in debts:
        longest[key] = max(wait, longest.get(key, wait))
    if longest:
        keys = sorted(longest)
        run(
            conn,
            _DEBT,
            {
                "key": keys,
                "wait": [timedelta(seconds=longest[k]) for k in keys],
                "now": now,
            },
        )


class Bucket(NamedTuple):
    """A rate-limit bucket as ``why`` reports it (the database's time as ``db_now``)."""

    key: str
    tokens: float
    """Its tokens as of ``updated_at`` (it has refilled since)."""
    updated_at: datetime
    debt_until: datetime | None
    rate: float | None
    period: float | None
    burst: float | None
    """The limit its last claim applied (None: not recorded, an older runner's claim)."""
    db_now: datetime


_BUCKETS = (
    select(*(B.c[name] for name in Bucket._fields[:-1]), NOW.label("db_now"))
    .where(B.c.key == func.any(param("key", "text", is_array=True)))
    .order_by(B.c.key)
)


def buckets(conn: Connection, keys: Sequence[str], now: datetime | None) -> list[Bucket]:
    """The bucket rows of ``keys`` that exist (read without locking them)."""
    return list(map(Bucket._make, run(conn, _BUCKETS, {"key": list(keys), "now": now})))
