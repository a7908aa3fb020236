"""The transition history (``gd_history``): what each committed step did, when enabled.

A row is written by the commit of the transition it describes, in the same transaction
and in one statement per commit group, so it exists exactly when the transition
committed: a fenced-out or rolled-back commit leaves none. Off by default (``"none"``):
the extra INSERT costs every commit group WAL and a statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs
from sqlalchemy import Connection, Row, func, insert, select

from gen_durable import models
from gen_durable.decide import Decision
from gen_durable.fsm import HistoryMode
from gen_durable.store._common import NOW, param, run, unnest_params

H = models.history

MAX_ERROR_CHARS = 8000
"""Bound on the error text of one row: its head (type, message) and the traceback's end."""


@attrs.frozen
class Entry:
    """The history row of one step's transition, carried with it to the commit."""

    instance_id: int
    fsm: str
    version: int
    attempt: int
    from_step: str
    to_step: str | None
    kind: str
    duration_ms: float
    error: str | None


class Carrier(Protocol):
    """What the commit hands to :func:`record`: a transition and its history entry."""

    @property
    def instance_id(self) -> int: ...

    @property
    def history(self) -> Entry | None: ...


class Landed(Protocol):
    """A transition that passed its fence, with the status it wrote."""

    @property
    def status(self) -> str: ...


def failing(decision: Decision) -> bool:
    """True for what ``history = "errors"`` records: a step that raised, or a ``Fail``."""
    return decision.kind in ("retry", "error", "fail") or _raised(decision.error)


def entry(
    mode: HistoryMode,
    *,
    instance_id: int,
    fsm: str,
    step: str,
    version: int,
    attempt: int,
    decision: Decision,
    seconds: float,
) -> Entry | None:
    """The entry to record for this transition under ``mode``, or None."""
    if mode == "none" or (mode == "errors" and not failing(decision)):
        return None
    return Entry(
        instance_id=instance_id,
        fsm=fsm,
        version=version,
        attempt=attempt,
        from_step=step,
        to_step=None if decision.finished else decision.step,
        kind=decision.kind,
        duration_ms=round(seconds * 1000.0, 3),
        error=error_text(decision.error),
    )


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
    if len(text) <= limit:
        return text
    marker = f"\n... {len(text) - limit} characters cut ...\n"
    head = limit // 4
    return text[:head] + marker + text[-(limit - head - len(marker)) :]


def _raised(error: Any) -> bool:
    return isinstance(error, dict) and bool(error.get("traceback"))


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
    items: Sequence[Carrier],
    landed: Mapping[int, Landed],
    now: datetime | None,
) -> None:
    """Write the entries of the transitions that landed (one statement; none: no SQL).

    Call it in the transaction of the commit, after its fenced UPDATE: ``landed`` maps
    the instance ids that UPDATE changed to the status each got.
    """
    rows = [
        (x.history, landed[x.instance_id].status)
        for x in items
        if x.history is not None and x.instance_id in landed
    ]
    if not rows:
        return
    params: dict[str, Any] = {name: [] for name in _COLUMNS}
    for e, status in rows:
        for name in _COLUMNS:
            params[name].append(status if name == "status" else getattr(e, name))
    run(conn, _RECORD, {**params, "now": now})


_OF_INSTANCE = (
    select(H)
    .where(H.c.instance_id == param("instance_id", "bigint"))
    .order_by(H.c.id.desc())
    .limit(param("limit", "int"))
)


def of_instance(conn: Connection, instance_id: int, limit: int) -> list[Row[Any]]:
    """The last ``limit`` transitions of an instance, oldest first."""
    rows = run(conn, _OF_INSTANCE, {"instance_id": instance_id, "limit": limit}).all()
    return list(reversed(rows))


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


def edges(conn: Connection, fsm: str) -> tuple[list[Row[Any]], list[Row[Any]]]:
    """What the recorded history of class ``fsm`` did (it reads every row of the class).

    Returns (edges, starts): (from_step, to_step, kind, n) per distinct transition,
    ``to_step`` None when it finished the instance; and (from_step, n): how many
    instances had their first recorded transition (version 0) leave that step.
    """
    found = list(run(conn, _EDGES, {"fsm": fsm}).all())
    starts = list(run(conn, _STARTS, {"fsm": fsm}).all())
    return found, starts
