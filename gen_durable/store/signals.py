"""Statements for signals: store one, wake its awaiting instance, load and consume packs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Row,
    and_,
    cast,
    exists,
    func,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.store._common import (
    NOW,
    I,
    S,
    param,
    recordset_param,
    run,
    unnest_params,
)

_INSERT_SIGNAL = (
    pg_insert(S)
    .values(
        instance_id=param("instance_id", "bigint"),
        name=param("name", "text"),
        payload=cast(param("payload", "text"), JSONB),
        idempotency_key=param("idempotency_key", "text"),
        created_at=NOW,
    )
    .on_conflict_do_nothing(
        index_elements=[S.c.instance_id, S.c.idempotency_key],
        index_where=S.c.idempotency_key.is_not(None),
    )
    .returning(S.c.id)
)


def insert_signal(
    conn: Connection,
    instance_id: int,
    name: str,
    payload: str,
    idempotency_key: str | None,
    now: datetime | None,
) -> tuple[int, bool]:
    """Store a signal; returns (signal id, duplicate) — a repeated idempotency key is kept once."""
    params = {
        "instance_id": instance_id,
        "name": name,
        "payload": payload,
        "idempotency_key": idempotency_key,
        "now": now,
    }
    new_id = run(conn, _INSERT_SIGNAL, params).scalar_one_or_none()
    if new_id is not None:
        return new_id, False
    existing = run(
        conn,
        select(S.c.id).where(
            S.c.instance_id == instance_id, S.c.idempotency_key == idempotency_key
        ),
    ).scalar_one()
    return existing, True


def _pending_named(name: ColumnElement[Any]) -> ColumnElement[bool]:
    # Correlated to the row being woken two levels up (the unnest of its names sits between):
    # auto-correlation looks at the enclosing SELECT only and would read every instance.
    return (
        exists()
        .where(S.c.instance_id == I.c.id, S.c.consumed_at.is_(None), S.c.name == name)
        .correlate_except(S)
    )


def _await_satisfied() -> ColumnElement[bool]:
    """An awaiting row's condition holds: any (or, with await_all, every) name is pending."""
    names = func.unnest(I.c.await_names).table_valued("n").render_derived(name="aw")
    any_pending = exists().where(
        S.c.instance_id == I.c.id,
        S.c.consumed_at.is_(None),
        S.c.name == func.any(I.c.await_names),
    )
    every_pending = not_(exists(select(names.c.n).where(not_(_pending_named(names.c.n)))))
    return or_(and_(not_(I.c.await_all), any_pending), and_(I.c.await_all, every_pending))


_WAKE = (
    update(I)
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)), I.c.status == "awaiting")
    .where(_await_satisfied())
    .values(status="available", run_at=NOW, updated_at=NOW)
    .returning(I.c.id, I.c.queue)
)


def wake_satisfied(
    conn: Connection, ids: Sequence[int], now: datetime | None
) -> Sequence[Row[Any]]:
    """Make awaiting instances whose signals are pending runnable; returns (id, queue).

    Runs after the caller holds the rows' locks (a signal's sender, or the transition that
    parked them), so whichever of the two commits second sees the other's rows.
    """
    return run(conn, _WAKE, {"ids": list(ids), "now": now}).all()


_PENDING = (
    select(S.c.id, S.c.instance_id, S.c.name, S.c.payload, S.c.created_at)
    .where(
        S.c.instance_id == func.any(param("ids", "bigint", is_array=True)),
        S.c.consumed_at.is_(None),
    )
    .order_by(S.c.instance_id, S.c.id)
)


def pending_for(conn: Connection, ids: Sequence[int]) -> Sequence[Row[Any]]:
    """Pending signals of these instances, oldest first."""
    return run(conn, _PENDING, {"ids": list(ids)}).all()


_PACKS = recordset_param("packs", id="bigint", pack="text")
_RECORD_PACKS = (
    update(I)
    .where(I.c.id == _PACKS.c.id)
    .values(await_pack=func.string_to_array(_PACKS.c.pack, ",").cast(ARRAY(BigInteger)))
)


def record_packs(conn: Connection, packs: Mapping[int, Sequence[int]]) -> None:
    """Record the pack (signal ids) a claim built for each instance, in one statement.

    Runs in the claim's transaction (for rows leased at once, in the next one, before any
    of their steps starts), so the record exists before the step's first attempt does:
    every later attempt of the step — after a raise, a ``RateLimited`` re-run, a crash or
    a lost lease — is handed the same signals, whatever arrived since.
    """
    if packs:
        rows = [{"id": i, "pack": ",".join(map(str, ids))} for i, ids in packs.items()]
        run(conn, _RECORD_PACKS, {"packs": json.dumps(rows)})


_CONSUMED = unnest_params(id="bigint", version="int")
_CONSUME = (
    update(S)
    .where(S.c.id == _CONSUMED.c.id, S.c.consumed_at.is_(None))
    .values(consumed_at=NOW, consumed_version=_CONSUMED.c.version)
)


def consume(conn: Connection, pairs: Sequence[tuple[int, int]], now: datetime | None) -> None:
    """Mark signals consumed by a transition: pairs of (signal id, transition version)."""
    if pairs:
        params = {"id": [p[0] for p in pairs], "version": [p[1] for p in pairs], "now": now}
        run(conn, _CONSUME, params)
