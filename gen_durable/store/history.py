"""The transition history (``gd_history``): what each committed step did, when enabled.

A row is written by the commit of the transition it describes, in the same transaction
and in one statement per commit group, so it exists exactly when the transition
committed: a fenced-out or rolled-back commit leaves none. Off by default (``"none"``):
the extra INSERT costs every commit group WAL and a statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Select, Table, case, func, insert, literal, select

from gen_durable.domain.decide import Transition
from gen_durable.domain.serialization import storable_text
from gen_durable.store import models
from gen_durable.store._common import FINISHED, NOW, I, param, run, unnest_params

H = models.history
R = models.reruns


MAX_ERROR_CHARS = 8000
"""Bound on the error text of one row: its head (type, message) and the traceback's end."""


class Landed(Protocol):
    """A transition that passed its fence, with the status it wrote."""

    @property
    def status(self) -> str: ...


def error_text(error: Any) -> str | None:
    """``type: message`` and the traceback of an error document, clipped to a bound."""
    if not isinstance(error, dict):
        return None if error is None else clip(str(error))
    head = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    trace = error.get("traceback")
    return clip(f"{head}\n{trace.rstrip()}" if isinstance(trace, str) and trace else head)


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` if short enough, else its start and its end around a marker.

    A traceback's end holds the innermost frames and the exception, so it keeps most.
    """
    text = storable_text(text)
    if len(text) <= limit:
        return text
    marker = f"\n... {len(text) - limit} characters cut ...\n"
    head = limit // 4
    return text[:head] + marker + text[-(limit - head - len(marker)) :]


_ROWS = unnest_params(
    instance_id="bigint",
    fsm="text",
    version="int",
    attempt="int",
    from_step="text",
    to_step="text",
    kind="text",
    status="text",
    duration_ms="float",
    error="text",
)
_COLUMNS = [c.name for c in _ROWS.c]
_RECORD = insert(H).from_select(
    [*_COLUMNS, "at"], select(*(_ROWS.c[name] for name in _COLUMNS), NOW)
)


def record(
    conn: Connection,
    items: Sequence[Transition],
    landed: Mapping[int, Landed],
    now: datetime | None,
) -> None:
    """Write the rows of the transitions that landed and are recorded (one statement;
    none: no SQL).

    Call it in the transaction of the commit, after its fenced UPDATE: ``landed`` maps
    the instance ids that UPDATE changed to the status each got. The landed transitions
    of steps that raised also get their re-run evidence (:func:`record_reruns`): only a
    group holding one costs that statement.
    """
    record_reruns(conn, _raised(items, landed), now)
    rows = [x for x in items if x.history and x.instance_id in landed]
    if not rows:
        return
    params = {
        "instance_id": [x.instance_id for x in rows],
        "fsm": [x.fsm for x in rows],
        "version": [x.version for x in rows],
        "attempt": [x.attempt for x in rows],
        "from_step": [x.from_step for x in rows],
        "to_step": [None if x.finished else x.step for x in rows],
        "kind": [x.kind for x in rows],
        "status": [landed[x.instance_id].status for x in rows],
        "duration_ms": [x.duration_ms for x in rows],
        "error": [error_text(x.error) for x in rows],
        "now": now,
    }
    run(conn, _RECORD, params)


LEASE_EXPIRED = "lease_expired"
RELEASED = "released"
RAISED = "raised"


class Rerun(NamedTuple):
    """A claim that ended without its transition landing (a row of ``gd_reruns``)."""

    instance_id: int
    fsm: str
    step: str
    version: int
    attempt: int
    reason: str
    """``lease_expired`` (the reaper took the lease back), ``released`` (at shutdown,
    after the grace period) or ``raised`` (the step raised: a retry or a failure)."""
    runner: str | None
    error: str | None


_RERUN_ROWS = unnest_params(
    instance_id="bigint",
    fsm="text",
    step="text",
    version="int",
    attempt="int",
    reason="text",
    runner="text",
    error="text",
)
_RERUN_COLUMNS = [c.name for c in _RERUN_ROWS.c]
_RECORD_RERUNS = insert(R).from_select(
    [*_RERUN_COLUMNS, "at"], select(*(_RERUN_ROWS.c[name] for name in _RERUN_COLUMNS), NOW)
)


def record_reruns(conn: Connection, rows: Sequence[Rerun], now: datetime | None) -> None:
    """Write re-run evidence (one statement; none when ``rows`` is empty).

    Call it in the transaction that ends the claims (the reaper's, the release's), so
    the evidence exists exactly when the claim was ended.
    """
    if rows:
        params: dict[str, Any] = {name: [getattr(r, name) for r in rows] for name in Rerun._fields}
        run(conn, _RECORD_RERUNS, {**params, "now": now})


_RAISED_KINDS = frozenset({"retry", "error", "fail"})
"""A raised step's transition that re-runs it, or ends the instance (an ``on_error``
compensation goes on like a step that returned: the run counts as done)."""


def _raised(items: Sequence[Transition], landed: Mapping[int, Landed]) -> list[Rerun]:
    """The landed transitions of steps that raised: each attempt ran and will not count."""
    return [
        Rerun(x.instance_id, x.fsm, x.from_step, x.version, x.attempt, RAISED, None, text)
        for x in items
        if x.instance_id in landed
        and x.kind in _RAISED_KINDS
        and isinstance(x.error, dict)
        and x.error.get("traceback")
        and (text := error_text(x.error))
    ]


_RELEASED = insert(R).from_select(
    [*_RERUN_COLUMNS[:-1], "at"],
    select(
        I.c.id,
        I.c.fsm,
        I.c.step,
        I.c.version,
        I.c.attempt + 1,  # the release returned the attempt its claim had counted
        literal(RELEASED),
        param("runner", "text"),
        NOW,
    ).where(I.c.id == func.any(param("ids", "bigint", is_array=True))),
)


def record_released(
    conn: Connection, instance_ids: Sequence[int], runner: str, now: datetime | None
) -> None:
    """Re-run evidence for claims ``runner`` released while their steps still ran (call
    it in the release's transaction, after it)."""
    if instance_ids:
        run(conn, _RELEASED, {"ids": list(instance_ids), "runner": runner, "now": now})


TIMEOUT = "timeout"
OUTSIDE_CANCEL = "outside_cancel"
FAILING_KINDS = frozenset({"retry", "error", "fail", LEASE_EXPIRED})
"""The kinds ``history = "errors"`` keeps (and a step that raised, whatever its kind)."""


class Outside(NamedTuple):
    """A transition no step made: a timer that fired, a lease the reaper took back on the
    last attempt, a cancel from outside."""

    instance_id: int
    kind: str
    """``timeout``, ``lease_expired`` or ``outside_cancel``."""
    from_step: str | None
    """The step before (a timeout: the one it would have resumed at); None: the row's."""
    recorded: bool | None
    """Whether its class records it; None: only if its instance already has a row that
    only ``history = "all"`` writes (the caller does not know the class's setting)."""


_OUTSIDE = unnest_params(instance_id="bigint", kind="text", from_step="text", recorded="bool")
_AWAITED_FROM = (  # a timeout leaves the step that awaited: its await's row says which
    select(H.c.from_step)
    .where(
        H.c.instance_id == I.c.id,
        H.c.version == I.c.version - 1,
        H.c.kind == "await",
        _OUTSIDE.c.kind == TIMEOUT,
    )
    .order_by(H.c.id.desc())
    .limit(1)
    .scalar_subquery()
)
# A row without an error: only ``history = "all"`` writes one ("errors" keeps raised
# steps and Fails, each with its error).
_KEPT_ALL = select(H.c.id).where(H.c.instance_id == I.c.id, H.c.error.is_(None)).exists()
_ENDED = I.c.status.in_(FINISHED)
_RECORD_OUTSIDE = insert(H).from_select(
    [*_COLUMNS, "at"],
    select(
        I.c.id,
        I.c.fsm,
        I.c.version,
        I.c.attempt,
        func.coalesce(_AWAITED_FROM, _OUTSIDE.c.from_step, I.c.step),
        case((_ENDED, None), else_=I.c.step),
        _OUTSIDE.c.kind,
        I.c.status,
        literal(0.0),  # no step ran
        case((_ENDED, func.concat(I.c.error["type"].astext, ": ", I.c.error["message"].astext))),
        NOW,
    )
    .join(I, I.c.id == _OUTSIDE.c.instance_id)
    .where(func.coalesce(_OUTSIDE.c.recorded, _KEPT_ALL)),
)


def record_outside(conn: Connection, rows: Sequence[Outside], now: datetime | None) -> None:
    """Write the history rows of transitions no step made (one statement; none when no
    row is recorded), from each instance's row as it is now.

    Call it in the transaction that made them, after the statement that did.
    """
    rows = [r for r in rows if r.recorded is not False]
    if rows:
        params: dict[str, Any] = {
            name: [getattr(r, name) for r in rows] for name in Outside._fields
        }
        run(conn, _RECORD_OUTSIDE, {**params, "now": now})


_FINAL_RERUNS = (
    select(R.c.instance_id, func.count().label("n"))
    .join(I, I.c.id == R.c.instance_id)
    .where(
        R.c.instance_id == func.any(param("ids", "bigint", is_array=True)),
        I.c.status == "done",
        R.c.step == I.c.step,
        R.c.version == I.c.version - 1,  # the run that finished it, before its transition
        R.c.reason.in_([LEASE_EXPIRED, RAISED]),  # a release gives its attempt back
    )
    .group_by(R.c.instance_id)
)


def finishing_attempts(conn: Connection, done_ids: Sequence[int]) -> dict[int, int]:
    """The attempt that finished each done instance of ``done_ids`` (its counter starts
    over when a transition commits): 1 plus the attempts of its last step that raised or
    whose lease the reaper took back. One statement; none for no ids."""
    if not done_ids:
        return {}
    rows = run(conn, _FINAL_RERUNS, {"ids": list(done_ids)}).all()
    found: dict[int, int] = {row.instance_id: row.n for row in rows}
    return {i: 1 + found.get(i, 0) for i in done_ids}


class RerunRecord(NamedTuple):
    """One row of ``gd_reruns``, as ``show`` reads it."""

    step: str
    version: int
    attempt: int
    reason: str
    runner: str | None
    error: str | None
    at: datetime


def _latest_of_instance(table: Table, fields: Sequence[str]) -> Select[Any]:
    """The newest ``:limit`` rows of ``table`` for ``:instance_id`` (newest first)."""
    return (
        select(*(table.c[name] for name in fields))
        .where(table.c.instance_id == param("instance_id", "bigint"))
        .order_by(table.c.id.desc())
        .limit(param("limit", "int"))
    )


_RERUNS_OF = _latest_of_instance(R, RerunRecord._fields)


def reruns_of(conn: Connection, instance_id: int, limit: int) -> list[RerunRecord]:
    """The last ``limit`` re-runs of an instance's steps, oldest first."""
    rows = run(conn, _RERUNS_OF, {"instance_id": instance_id, "limit": limit}).all()
    return [RerunRecord._make(row) for row in reversed(rows)]


class HistoryRecord(NamedTuple):
    """One row of ``gd_history`` (its columns, in order)."""

    id: int
    instance_id: int
    fsm: str
    version: int
    attempt: int
    from_step: str
    to_step: str | None
    kind: str
    status: str
    duration_ms: float
    error: str | None
    at: datetime


_OF_INSTANCE = _latest_of_instance(H, HistoryRecord._fields)


def of_instance(conn: Connection, instance_id: int, limit: int) -> list[HistoryRecord]:
    """The last ``limit`` transitions of an instance, oldest first."""
    rows = run(conn, _OF_INSTANCE, {"instance_id": instance_id, "limit": limit}).all()
    return [HistoryRecord._make(row) for row in reversed(rows)]


class Edge(NamedTuple):
    """A distinct recorded transition of a class, and how many times it happened."""

    from_step: str
    to_step: str | None
    """None: the transition finished the instance."""
    kind: str
    n: int


class Start(NamedTuple):
    """A step the first recorded transition of ``n`` instances left."""

    from_step: str
    n: int


_EDGES = (
    select(H.c.from_step, H.c.to_step, H.c.kind, func.count().label("n"))
    .where(H.c.fsm == param("fsm", "text"))
    .group_by(H.c.from_step, H.c.to_step, H.c.kind)
    .order_by(H.c.from_step, H.c.to_step.nulls_last(), H.c.kind)
)
_STARTS = (
    select(H.c.from_step, func.count(H.c.instance_id.distinct()).label("n"))
    .where(H.c.fsm == param("fsm", "text"), H.c.version == 0)
    .group_by(H.c.from_step)
    .order_by(H.c.from_step)
)


def edges(conn: Connection, fsm: str) -> tuple[list[Edge], list[Start]]:
    """What the recorded history of class ``fsm`` did (it reads every row of the class).

    Returns (edges, starts): (from_step, to_step, kind, n) per distinct transition,
    ``to_step`` None when it finished the instance; and (from_step, n): how many
    instances had their first recorded transition (version 0) leave that step.
    """
    found = list(map(Edge._make, run(conn, _EDGES, {"fsm": fsm})))
    starts = list(map(Start._make, run(conn, _STARTS, {"fsm": fsm})))
    return found, starts
