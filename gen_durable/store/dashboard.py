"""Read-only statements of the web dashboard: a filtered, keyset-paginated instance list,
per-minute throughput, the oldest waiting instance of each queue, children trees and the
per-step counts of one class."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, func, literal, select

from gen_durable.store._common import NOW, I, param, run
from gen_durable.store.queries import ListedInstance, StatusCount

_LISTED = select(*(I.c[name] for name in ListedInstance._fields))
_EQUAL = ("fsm", "status", "queue", "step", "correlation_key", "lease_owner")


def _filtered(stmt: Select[Any], where: Mapping[str, Any]) -> Select[Any]:
    for name in _EQUAL:
        if where.get(name) is not None:
            stmt = stmt.where(I.c[name] == where[name])
    if where.get("created_after") is not None:
        stmt = stmt.where(I.c.created_at >= where["created_after"])
    if where.get("created_before") is not None:
        stmt = stmt.where(I.c.created_at < where["created_before"])
    return stmt


def instance_page(
    conn: Connection,
    where: Mapping[str, Any],
    *,
    before_id: int | None,
    after_id: int | None,
    limit: int,
) -> list[ListedInstance]:
    """Up to ``limit`` instances matching ``where`` (equality on ``fsm``, ``status``,
    ``queue``, ``step``, ``correlation_key``, ``lease_owner``; ``created_after`` /
    ``created_before``).

    Newest first, with ids below ``before_id``; or, given ``after_id``, the ones just
    above it, oldest first (the page before, read backwards). A page costs the same
    however deep it is (keyset pagination).
    """
    stmt = _filtered(_LISTED, where)
    if after_id is not None:
        stmt = stmt.where(I.c.id > after_id).order_by(I.c.id.asc())
    else:
        if before_id is not None:
            stmt = stmt.where(I.c.id < before_id)
        stmt = stmt.order_by(I.c.id.desc())
    return list(map(ListedInstance._make, run(conn, stmt.limit(limit))))


class MinuteCount(NamedTuple):
    """Instances of a queue that finished with a status during one minute."""

    queue: str
    minute: datetime
    status: str
    n: int


_MINUTE = func.date_trunc("minute", I.c.finished_at)
_PER_MINUTE = (
    select(I.c.queue, _MINUTE.label("minute"), I.c.status, func.count().label("n"))
    .where(I.c.finished_at > NOW - param("window", "interval"))
    .group_by(I.c.queue, _MINUTE, I.c.status)
    .order_by(I.c.queue, _MINUTE)
)


def finished_per_minute(conn: Connection, minutes: int, now: datetime | None) -> list[MinuteCount]:
    """Finished instances per queue, minute and status over the last ``minutes`` (through
    the index on ``finished_at``: the cost is the rows of that window)."""
    params = {"window": timedelta(minutes=minutes), "now": now}
    return list(map(MinuteCount._make, run(conn, _PER_MINUTE, params)))


_UNFINISHED = (
    select(I.c.queue, I.c.status, func.count().label("n"))
    .where(I.c.finished_at.is_(None))
    .group_by(I.c.queue, I.c.status)
    .order_by(I.c.queue, I.c.status)
)


def unfinished_counts(conn: Connection) -> list[StatusCount]:
    """Unfinished instances per queue and status (through the partial index of the live
    correlation keys, which holds every unfinished row: the finished ones are not read)."""
    return list(map(StatusCount._make, run(conn, _UNFINISHED)))


class TreeNode(NamedTuple):
    """An instance in a children tree: its parent and where it is."""

    id: int
    parent_id: int | None
    fsm: str
    status: str
    step: str
    depth: int


_ROOT = (
    select(I.c.id, I.c.parent_id, I.c.fsm, I.c.status, I.c.step, literal(0).label("depth"))
    .where(I.c.parent_id == param("id", "bigint"))
    .cte("tree", recursive=True)
)
_KID = I.alias("kid")
_TREE = _ROOT.union_all(
    select(_KID.c.id, _KID.c.parent_id, _KID.c.fsm, _KID.c.status, _KID.c.step, _ROOT.c.depth + 1)
    .where(_KID.c.parent_id == _ROOT.c.id)
    .where(_ROOT.c.depth < param("depth", "int"))
)
_DESCENDANTS = select(*_TREE.c).order_by(_TREE.c.depth, _TREE.c.id).limit(param("limit", "int"))


def descendants(conn: Connection, instance_id: int, depth: int, limit: int) -> list[TreeNode]:
    """The children of an instance, theirs, and so on ``depth`` levels down (at most
    ``limit`` rows, shallowest first), through the index on ``parent_id``."""
    params = {"id": instance_id, "depth": depth, "limit": limit}
    return list(map(TreeNode._make, run(conn, _DESCENDANTS, params)))


class StepNow(NamedTuple):
    """How many unfinished instances of a class sit at a step, with a status."""

    step: str
    status: str
    n: int


_STEPS_OF = (
    select(I.c.step, I.c.status, func.count().label("n"))
    .where(I.c.fsm == param("fsm", "text"), I.c.finished_at.is_(None))
    .group_by(I.c.step, I.c.status)
    .order_by(I.c.step, I.c.status)
)


def steps_now(conn: Connection, fsm: str) -> list[StepNow]:
    """Unfinished instances of class ``fsm`` per step and status."""
    return list(map(StepNow._make, run(conn, _STEPS_OF, {"fsm": fsm})))


_CLASSES = select(I.c.fsm).distinct().order_by(I.c.fsm)


def classes(conn: Connection) -> list[str]:
    """The class names that instances have."""
    return [row[0] for row in run(conn, _CLASSES)]
