"""Child instances: insert a Spawn's children, settle joins, cancel subtrees, read children.

A parent parked by a Spawn has status ``awaiting`` without signal names, its
``join_policy`` and a ``pending_children`` counter. Every transaction that finishes a
child (a step commit, the reaper, ``cancel``) decrements the counter of its parent in
that same transaction, one UPDATE per parent however many of its children it finishes;
the UPDATE whose decrement meets the join condition makes the parent runnable. It is
guarded by ``status = 'awaiting'``, so it happens once: later completions only count.

Lock order: a transaction locks the children it finishes before their parents, and each
set in id order (:func:`finish` locks the parents itself), so the parent's row is held
only from that last statement to the commit. A child's id is always greater than its
parent's, so :func:`cancel_descendants`, which locks a whole subtree in descending id
order, also locks every child before its parent; ``cancel`` cancels descendants first,
then the instance, then counts it against its own parent. The one exception is
``cancel_rest``, which cancels siblings while holding their parent: a cycle with a group
that holds one of them is broken by the committer's short ``lock_timeout``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import (
    Connection,
    Row,
    and_,
    case,
    func,
    not_,
    or_,
    select,
    update,
)

from gen_durable import tracing
from gen_durable.domain import serialization
from gen_durable.domain.insert_spec import InsertSpec, key_taken
from gen_durable.store import inserts, instances
from gen_durable.store._common import NOW, I, param, run, unnest_params
from gen_durable.types import JSON

# -- spawning -------------------------------------------------------------------------------

_LIVE_KEYS = select(I.c.correlation_key, I.c.id).where(
    I.c.correlation_key == func.any(param("keys", "text", is_array=True)),
    I.c.finished_at.is_(None),
)


def insert(
    conn: Connection,
    spawned: Sequence[tuple[int, Sequence[InsertSpec], Sequence[int]]],
    now: datetime | None,
) -> tuple[Sequence[Row[Any]], list[tuple[int, int, str]]]:
    """Insert the children of parents whose Spawn transition landed in this transaction.

    ``spawned`` holds (parent id, specs, the ids drawn for them). Returns (id, status,
    queue) of each child inserted runnable, and (parent id, child id, queue) of each
    child born failed because an unfinished instance holds its correlation key (the
    caller counts those as finished). With tracing on, each child's trace context is the
    span of the step that spawned it (:meth:`gen_durable.tracing.Tracer.of_step`).
    """
    # The parent's step span, when tracing is on, is the parent of its children's spans.
    tracer = tracing.tracer
    specs = [
        attrs.evolve(
            spec,
            parent_id=parent,
            trace_context=tracer.of_step(parent) if tracer is not None else None,
        )
        for parent, batch, _ in spawned
        for spec in batch
    ]
    ids = [child for _, _, drawn in spawned for child in drawn]
    if not specs:
        return [], []
    made = inserts.insert_rows(conn, specs, ids, now)
    if len(made) == len(specs):
        return made, []
    made_ids = {r.id for r in made}
    clashed = [(s, child) for s, child in zip(specs, ids, strict=True) if child not in made_ids]
    keys = [s.correlation_key for s, _ in clashed]
    holders = {r.correlation_key: r.id for r in run(conn, _LIVE_KEYS, {"keys": keys})}
    errors = [key_taken(s.correlation_key, holders.get(s.correlation_key)) for s, _ in clashed]
    inserts.insert_failed(conn, [s for s, _ in clashed], [c for _, c in clashed], errors, now)
    return made, [(_parent_of(s), child, s.queue) for s, child in clashed]


def _parent_of(spec: InsertSpec) -> int:
    assert spec.parent_id is not None, "a child's record carries its parent"
    return spec.parent_id


# -- the join -------------------------------------------------------------------------------

_F = unnest_params(parent="bigint", child="bigint", failed="bool")
# The parents, locked in id order. Rows a FOR UPDATE waited for come back as their latest
# versions, so the counts below start from what the parents are now.
_P = (
    select(
        I.c.id,
        I.c.status,
        I.c.join_policy,
        I.c.pending_children,
        I.c.children_from,
        I.c.await_names.is_(None).label("unparked"),
    )
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)))
    .order_by(I.c.id)
    .with_for_update()
    .cte("parents")
)
_N = func.count()
_ANY_FAILED = func.bool_or(_F.c.failed)
_WAKE = and_(
    _P.c.status == "awaiting",
    _P.c.join_policy.is_not(None),
    _P.c.unparked,
    or_(_P.c.pending_children - _N <= 0, and_(_ANY_FAILED, _P.c.join_policy != "wait")),
)
# Only children of the parent's latest Spawn count (a fail_fast parent may spawn again
# while stragglers of the previous batch still run).
_COUNTS = (
    select(
        _P.c.id,
        (_P.c.pending_children - _N).label("left"),
        _WAKE.label("wake"),
        _P.c.join_policy.label("policy"),
    )
    .select_from(_F.join(_P, _P.c.id == _F.c.parent))
    .where(_F.c.child >= _P.c.children_from)
    .group_by(_P.c.id, _P.c.status, _P.c.join_policy, _P.c.pending_children, _P.c.unparked)
    .subquery("d")
)
_SETTLE = (
    update(I)
    .where(I.c.id == _COUNTS.c.id)
    .values(
        pending_children=_COUNTS.c.left,
        status=case((_COUNTS.c.wake, "available"), else_=I.c.status),
        run_at=case((_COUNTS.c.wake, NOW), else_=I.c.run_at),
        updated_at=NOW,
    )
    .returning(I.c.id, I.c.queue, _COUNTS.c.wake, _COUNTS.c.policy)
)


def finish(
    conn: Connection, finished: Sequence[tuple[int, int, bool]], now: datetime | None
) -> tuple[list[Row[Any]], list[Row[Any]]]:
    """Count finished children against their parents; wake the parents whose join is met.

    ``finished`` holds (parent id, child id, failed) of children this transaction
    finished (after locking them). One statement: it locks the parents in id order, then
    updates each once. A woken ``cancel_rest`` parent has its unfinished children cancelled here.
    Returns ((id, queue) of each woken parent, (id, queue) of each cancelled instance).
    """
    if not finished:
        return [], []
    params = {
        "ids": sorted({p for p, _, _ in finished}),
        "parent": [p for p, _, _ in finished],
        "child": [c for _, c, _ in finished],
        "failed": [f for _, _, f in finished],
        "now": now,
    }
    rows = run(conn, _SETTLE, params).all()
    woken = [r for r in rows if r.wake]
    rest = [r.id for r in woken if r.policy == "cancel_rest"]
    cancelled: list[Row[Any]] = []
    if rest:
        error = {"type": "Cancel", "message": "a sibling failed (on_failure='cancel_rest')"}
        cancelled = cancel_descendants(conn, rest, error, now, latest_spawn_only=True)
    return woken, cancelled


_REOPEN_CHILD = I.alias("c")
_REOPEN_PARENT = I.alias("p")
# Per parent, how many of the reopened children its latest Spawn is joining.
_REOPENED = (
    select(_REOPEN_CHILD.c.parent_id.label("parent"), func.count().label("n"))
    .select_from(
        _REOPEN_CHILD.join(_REOPEN_PARENT, _REOPEN_PARENT.c.id == _REOPEN_CHILD.c.parent_id)
    )
    .where(
        _REOPEN_CHILD.c.id == func.any(param("children", "bigint", is_array=True)),
        _REOPEN_CHILD.c.id >= _REOPEN_PARENT.c.children_from,
    )
    .group_by(_REOPEN_CHILD.c.parent_id)
    .subquery("k")
)
# The parents, locked in id order first (as a commit of their children's finishes locks
# them), so that a batch of reopened children cannot deadlock with one.
_LOCK_REOPENED = (
    select(I.c.id).where(I.c.id.in_(select(_REOPENED.c.parent))).order_by(I.c.id).with_for_update()
)
_REOPEN = (
    update(I)
    .where(
        I.c.id == _REOPENED.c.parent,
        I.c.status == "awaiting",
        I.c.join_policy.is_not(None),
        I.c.await_names.is_(None),
    )
    .values(pending_children=I.c.pending_children + _REOPENED.c.n, updated_at=NOW)
)


def reopen(conn: Connection, child_ids: Sequence[int], now: datetime | None) -> None:
    """Finished children run again (``retry``): each parent still joining them waits for
    them again (two children of one parent count two)."""
    if not child_ids:
        return
    children = sorted(child_ids)
    if run(conn, _LOCK_REOPENED, {"children": children}).first() is not None:  # any parent
        run(conn, _REOPEN, {"children": children, "now": now})


# -- cancelling subtrees ----------------------------------------------------------------------

_ROOT = I.alias("root")
_KID = I.alias("kid")
_tree = (
    select(_KID.c.id)
    .select_from(_KID.join(_ROOT, _ROOT.c.id == _KID.c.parent_id))
    .where(
        _ROOT.c.id == func.any(param("roots", "bigint", is_array=True)),
        or_(not_(param("latest", "bool")), _KID.c.id >= _ROOT.c.children_from),
    )
    .cte("tree", recursive=True)
)
_SUB = I.alias("sub")
_TREE = _tree.union_all(select(_SUB.c.id).where(_SUB.c.parent_id == _tree.c.id))
_LOCK_TREE = (
    select(I.c.id)
    .where(I.c.id.in_(select(_TREE.c.id)), I.c.finished_at.is_(None))
    .order_by(I.c.id.desc())
    .with_for_update()
)
_CANCEL = (
    update(I)
    .where(I.c.id == func.any(param("ids", "bigint", is_array=True)), I.c.finished_at.is_(None))
    .values(instances.CANCELLED)
    .returning(I.c.id, I.c.queue)
)


def cancel_descendants(
    conn: Connection,
    roots: Sequence[int],
    error: JSON,
    now: datetime | None,
    *,
    latest_spawn_only: bool = False,
) -> list[Row[Any]]:
    """Cancel every unfinished descendant of ``roots``; returns (id, queue) of each.

    Running ones lose their lease (their commit is fenced out). Locks the subtree in
    descending id order (children before parents), then repeats until no unfinished
    descendant is left: a descendant that committed a Spawn meanwhile is found on the
    next round. ``latest_spawn_only`` limits the roots' own children to their latest
    Spawn (the siblings ``cancel_rest`` cancels); deeper levels are always included.
    """
    out: list[Row[Any]] = []
    body = serialization.dumps(error)
    while True:
        ids = list(
            run(conn, _LOCK_TREE, {"roots": list(roots), "latest": latest_spawn_only}).scalars()
        )
        if not ids:
            return out
        out.extend(run(conn, _CANCEL, {"ids": ids, "error": body, "now": now}).all())


# -- reading ----------------------------------------------------------------------------------

_OWNER = I.alias("owner")
_LATEST = (
    select(I.c.parent_id, I.c.id, I.c.fsm, I.c.status, I.c.result, I.c.error)
    .select_from(I.join(_OWNER, _OWNER.c.id == I.c.parent_id))
    .where(
        _OWNER.c.id == func.any(param("ids", "bigint", is_array=True)),
        I.c.id >= _OWNER.c.children_from,
    )
    .order_by(I.c.parent_id, I.c.id)
)


def latest_of(conn: Connection, parent_ids: Sequence[int]) -> Sequence[Row[Any]]:
    """The children of each parent's latest Spawn, in spawn order (one statement)."""
    if not parent_ids:
        return []
    return run(conn, _LATEST, {"ids": list(parent_ids)}).all()


_ALL = select(I.c.id).where(I.c.parent_id == param("parent", "bigint")).order_by(I.c.id)


def ids_of(conn: Connection, parent_id: int) -> list[int]:
    """Ids of every child an instance spawned, oldest first."""
    return list(run(conn, _ALL, {"parent": parent_id}).scalars())
