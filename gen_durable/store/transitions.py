"""The step commit: many transitions in one fenced statement, one transaction.

Each row is still fenced by its own lease token (and an unexpired lease), so a worker
that lost its lease cannot commit; rows are locked in id order so two groups never
deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import Connection, Text, case, cast, func, literal, select, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from gen_durable import faults
from gen_durable.domain import serialization
from gen_durable.domain.decide import Transition
from gen_durable.store import _fast, concurrency, inserts, ratelimits
from gen_durable.store import children as child_sql
from gen_durable.store import history as history_sql
from gen_durable.store import signals as signal_sql
from gen_durable.store._common import FINISHED, NOW, SEP, ZERO, I, param, recordset_param


@attrs.frozen
class Committed:
    """A transition that landed: the row's new status and queue."""

    instance_id: int
    status: str
    queue: str


_T = recordset_param(
    "batch",
    id="bigint",
    token="uuid",
    status="text",
    step="text",
    state="jsonb",
    keep_state="bool",
    delay="float",
    run_at="tsz",
    await_names="text",
    await_all="bool",
    await_limit="int",
    timeout_step="text",
    join_policy="text",
    children="int",
    children_from="bigint",
    result="text",
    error="text",
    reset="bool",
    give_back="bool",
    rate_key="text",
    rate_weight="float",
    rekey="bool",
    concurrency_key="text",
    concurrency_limit="int",
    state_version="int",
)
_FINISHED = literal(list(FINISHED), ARRAY(Text))
_NULL = literal("null", JSONB)
_READY = _T.c.status == func.any(literal(["available", "scheduled"], ARRAY(Text)))
_DELAY = func.make_interval(0, 0, 0, 0, 0, 0, _T.c.delay)
_DUE = case(
    (_READY, func.coalesce(_T.c.run_at, NOW + func.coalesce(_DELAY, ZERO))),
    (_T.c.status == "awaiting", NOW + _DELAY),
    else_=None,
)
# Lock in id order first: two groups (or a group and a parent update) never deadlock.
_IDS = func.any(param("id", "bigint", is_array=True))
_LOCKED = (
    select(I.c.id, I.c.concurrency_key)
    .where(I.c.id == _IDS)
    .order_by(I.c.id)
    .with_for_update()
    .cte("locked")
)
_COMMIT = (
    update(I)
    .where(
        # Repeated from the CTE so that the planner reads the batch's rows by primary key
        # (it cannot see through the CTE), not every running row.
        I.c.id == _IDS,
        I.c.id == _T.c.id,
        I.c.id == _LOCKED.c.id,
        I.c.lease_token == _T.c.token,
        I.c.status == "running",
        I.c.lease_expires_at > func.clock_timestamp(),
    )
    .values(
        status=case(
            (_READY, case((_DUE > NOW, "scheduled"), else_="available")), else_=_T.c.status
        ),
        step=_T.c.step,
        # A failure keeps the stored state; a state of JSON null comes as SQL NULL.
        state=case((_T.c.keep_state, I.c.state), else_=func.coalesce(_T.c.state, _NULL)),
        # A state upgraded on load is written back in the code's version; a kept one
        # keeps its own.
        state_version=case(
            (_T.c.keep_state, I.c.state_version),
            else_=func.coalesce(_T.c.state_version, I.c.state_version),
        ),
        # a retry re-runs the same step: its version (and idempotency key) stays
        version=case((_T.c.reset, I.c.version + 1), else_=I.c.version),
        attempt=case(
            (_T.c.reset, 0),
            (_T.c.give_back, func.greatest(I.c.attempt - 1, 0)),
            else_=I.c.attempt,
        ),
        rate_key=_T.c.rate_key,
        rate_weight=_T.c.rate_weight,
        concurrency_key=case((_T.c.rekey, _T.c.concurrency_key), else_=I.c.concurrency_key),
        concurrency_limit=case(
            (_T.c.rekey, func.coalesce(I.c.concurrency_limit, _T.c.concurrency_limit)),
            else_=I.c.concurrency_limit,
        ),
        run_at=_DUE,
        # A retry keeps what the step awaited, so the next attempt gets the same pack.
        await_names=case(
            (_T.c.reset, func.string_to_array(_T.c.await_names, SEP)), else_=I.c.await_names
        ),
        await_all=case((_T.c.reset, _T.c.await_all), else_=I.c.await_all),
        await_limit=case((_T.c.reset, _T.c.await_limit), else_=I.c.await_limit),
        timeout_step=case((_T.c.reset, _T.c.timeout_step), else_=I.c.timeout_step),
        await_pack=case((_T.c.reset, None), else_=I.c.await_pack),
        # A Spawn parks the parent on its children: the counter, the policy and where the
        # batch's ids start. Other transitions clear the policy and keep the rest.
        join_policy=_T.c.join_policy,
        pending_children=func.coalesce(_T.c.children, I.c.pending_children),
        children_from=func.coalesce(_T.c.children_from, I.c.children_from),
        result=cast(_T.c.result, JSONB),
        error=cast(_T.c.error, JSONB),
        finished_at=case((_T.c.status == func.any(_FINISHED), NOW), else_=None),
        updated_at=NOW,
        lease_token=None,
        lease_owner=None,
        lease_expires_at=None,
    )
    # The key it held while running (the locked row, before this update) is the one freed.
    .returning(
        I.c.id, I.c.status, I.c.queue, I.c.parent_id, _LOCKED.c.concurrency_key.label("held")
    )
)


def commit(
    conn: Connection,
    items: Sequence[Transition],
    now: datetime | None,
    *,
    lock_timeout_ms: int | None = None,
    generic_plan: bool = False,
) -> dict[int, Committed]:
    """Write transitions; returns those that committed (fenced-out ones are absent).

    Runs inside the caller's transaction: the grouped committer's own, or the session a
    step wrote through. ``lock_timeout_ms`` bounds how long it waits for a row lock
    (``SET LOCAL lock_timeout``, for the rest of the transaction). ``generic_plan``: plan
    the statements for any parameters (``SET LOCAL plan_cache_mode``), for a connection
    that commits one transition at a time (a step's own session): there PostgreSQL keeps
    planning the prepared UPDATE anew on every execution, its plan for one row looking
    cheaper than the generic one, and planning it cost the server about twice what
    running it did (the grouped committer's connection settles on the generic plan by
    itself).

    Statements: the fenced UPDATE, then signal consumption, then — for rows that just
    parked — a check for signals that are already pending, then the children of landed
    Spawns and the join of parents whose children just finished
    (:mod:`gen_durable.store.children`); the children inserted and the instances the join
    made runnable or cancelled are returned too.
    """
    if not items:
        return {}
    items = sorted(items, key=lambda x: x.instance_id)
    child_ids = _draw_child_ids(conn, items)
    batch = ",".join(_row(x, child_ids.get(x.instance_id)) for x in items)
    params = {"id": [x.instance_id for x in items], "batch": f"[{batch}]", "now": now}
    calls: list[_fast.Call] = [(_COMMIT, params)]
    if lock_timeout_ms is not None:  # sent with the UPDATE (and BEGIN): one round trip
        calls.insert(0, (_LOCK_TIMEOUT, {"value": f"{int(lock_timeout_ms)}ms"}))
    if generic_plan:  # in the same round trip, as the lock timeout
        calls.insert(0, (_GENERIC_PLAN, None))
    rows = _fast.pipelined(conn, calls)[-1]
    landed = {row.id: Committed(row.id, row.status, row.queue) for row in rows}
    history_sql.record(conn, items, landed, now)
    pairs = [(sig, x.version + 1) for x in items if x.instance_id in landed for sig in x.consumed]
    signal_sql.consume(conn, pairs, now)
    spawns = {x.instance_id for x in items if x.kind == "spawn"}
    parked = [i for i, c in landed.items() if c.status == "awaiting" and i not in spawns]
    if parked:
        for row in signal_sql.wake_satisfied(conn, parked, now):
            landed[row.id] = Committed(row.id, "available", row.queue)
    _join(conn, items, rows, landed, child_ids, now)
    debts = [
        (x.route.rate_key, x.delay or 0.0)
        for x in items
        if x.kind == "rate_limited" and x.route.rate_key and x.instance_id in landed
    ]
    ratelimits.indebt(conn, debts, now)
    # Last: it may wait for a claimer deciding on the same key (see store.concurrency).
    for row in concurrency.release(conn, [r.held for r in rows], now):
        landed[row.id] = Committed(row.id, "available", row.queue)
    if faults.active is not None:
        faults.hit("spawn_commit" if child_ids else "commit", conn)
    return landed


def _row(x: Transition, children: list[int] | None) -> str:
    """One transition as an object of the batch; its state goes in as the JSON text it was
    encoded to once (a jsonb column of the recordset), not as a string to parse again."""
    r = x.route
    fields = {
        "id": x.instance_id,
        "token": str(x.lease_token),
        "status": x.status,
        "step": x.step,
        "keep_state": x.state is None,
        "delay": x.delay,
        "run_at": None if x.run_at is None else x.run_at.isoformat(),
        "await_names": SEP.join(x.await_names) if x.await_names else None,
        "await_all": x.await_all,
        "await_limit": x.await_limit,
        "timeout_step": x.timeout_step,
        "result": serialization.dumps(x.result) if x.status == "done" else None,
        "error": None if x.error is None else serialization.dumps(x.error),
        "reset": x.reset_attempt,
        "give_back": x.give_back_attempt,
        "rate_key": r.rate_key,
        "rate_weight": r.rate_weight,
        "rekey": r.rekey,
        "concurrency_key": r.concurrency_key,
        "concurrency_limit": r.concurrency_limit,
        "join_policy": x.join_policy,
        "children": len(x.children) if x.kind == "spawn" else None,
        "children_from": children[0] if children else None,
        "state_version": x.state_version,
    }
    text = serialization.encode_json(fields)
    return text if x.state is None else f'{text[:-1]},"state":{x.state}}}'


def _draw_child_ids(conn: Connection, items: Sequence[Transition]) -> dict[int, list[int]]:
    """Ids for the children of every Spawn in the group, ascending in spawn order."""
    spawns = [x for x in items if x.kind == "spawn"]
    ids = inserts.allocate_ids(conn, sum(len(x.children) for x in spawns))
    out: dict[int, list[int]] = {}
    for x in spawns:
        count = len(x.children)
        out[x.instance_id], ids = ids[:count], ids[count:]
    return out


def _join(
    conn: Connection,
    items: Sequence[Transition],
    rows: Sequence[Any],
    landed: dict[int, Committed],
    child_ids: dict[int, list[int]],
    now: datetime | None,
) -> None:
    """Insert the children of landed Spawns; count finished children against their parents.

    Adds to ``landed`` the children inserted, the parents this made runnable and the
    instances a ``cancel_rest`` join cancelled (so that the caller wakes their queues; a
    transition of the group that did not land is never marked as committed).
    """
    spawned = [
        (x.instance_id, x.children, child_ids[x.instance_id])
        for x in items
        if x.kind == "spawn" and x.instance_id in landed
    ]
    finished = [
        (row.parent_id, row.id, row.status == "failed")
        for row in rows
        if row.parent_id is not None and row.status in FINISHED
    ]
    made, born_failed = child_sql.insert(conn, spawned, now)
    for row in made:
        landed[row.id] = Committed(row.id, row.status, row.queue)
    for parent, child, queue in born_failed:
        landed[child] = Committed(child, "failed", queue)
        finished.append((parent, child, True))
    woken, cancelled = child_sql.finish(conn, finished, now)
    group = {x.instance_id for x in items}
    for row in woken:
        if row.id in landed or row.id not in group:
            landed[row.id] = Committed(row.id, "available", row.queue)
    for row in cancelled:
        if row.id in landed or row.id not in group:
            landed[row.id] = Committed(row.id, "cancelled", row.queue)


_LOCK_TIMEOUT = select(func.set_config("lock_timeout", param("value", "text"), True))
_GENERIC_PLAN = select(func.set_config("plan_cache_mode", "force_generic_plan", True))
