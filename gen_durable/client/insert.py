"""Inserting instances: ``insert`` and ``insert_all``, with dedup windows and debounce.

Like every client function, they work inside the caller's transaction and never commit
for them; input is validated before any SQL runs, and a check only the database can make
runs in a SAVEPOINT, so a typed error leaves the caller's transaction usable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal, Unpack

import attrs
from sqlalchemy import Connection

from gen_durable import events, store, tracing
from gen_durable.client.targets import Bind, check_now, connection
from gen_durable.domain import serialization
from gen_durable.domain.definitions import Definition
from gen_durable.domain.insert_spec import InsertOptions, InsertSpec
from gen_durable.errors import DuplicateInstance, InvalidTransition, ValidationError

OnConflict = Literal["return", "raise"]

__all__ = ["OnConflict", "check_window", "emit_insert", "insert", "insert_all"]


def _check_on_conflict(value: str) -> None:
    if value not in ("return", "raise"):
        raise ValidationError(f"on_conflict must be 'return' or 'raise', got {value!r}")


def insert(
    bind: Bind,
    cls: type[Definition] | str,
    *,
    on_conflict: OnConflict = "return",
    dedup_window: float | None = None,
    debounce: float | None = None,
    max_wait: float | None = None,
    replace: bool = False,
    now: datetime | None = None,
    **options: Unpack[InsertOptions],
) -> int:
    """Insert one instance in the caller's transaction and return its id.

    When an unfinished instance already has ``correlation_key``, return its id
    (``on_conflict="return"``) or raise :class:`DuplicateInstance` (``"raise"``). With
    ``dedup_window`` (seconds), an instance with that key that finished within the window
    counts as the live one too, so a request retried after its flow completed does not
    start a second run.

    Debounce: with ``debounce`` (seconds) the instance starts that long after the last
    insert of its key — an insert on a key whose instance has not started yet pushes its
    start back (never beyond ``max_wait`` seconds after the first insert) and, with
    ``replace=True``, replaces its state or args; the existing id is returned.

    Args:
        bind: The caller's ``Session`` or ``Connection``; nothing is committed.
        cls: The FSM or Job class, or its registry name (registered in this process).
        options: The instance's own options, as for ``Cls.new``:
            :class:`~gen_durable.domain.insert_spec.InsertOptions` (``state`` or ``args``,
            ``correlation_key``, ``queue``, ``priority``, ``delay`` or ``run_at``,
            ``max_attempts``, ``concurrency_key``, ``concurrency_limit``).
        on_conflict: With a live ``correlation_key``, ``"return"`` its instance's id or
            ``"raise"`` :class:`DuplicateInstance`.
        dedup_window: Seconds during which a finished instance with the key still counts
            as the live one.
        debounce: Seconds after the last insert of the key at which the instance starts.
        max_wait: The longest ``debounce`` may push the start back, in seconds after the
            first insert.
        replace: With ``debounce``, replace the waiting instance's state or args.
        now: Replaces the database's ``now()`` for the times written (for tests).
    """
    check_now(now)
    if debounce is not None:
        _check_debounce(
            options.get("correlation_key"),
            debounce,
            max_wait,
            options.get("delay"),
            options.get("run_at"),
        )
        options["delay"] = debounce
    spec = InsertSpec.build(cls, **options)
    if debounce is not None:
        pushed = _debounce(bind, spec, debounce, max_wait, replace, now)
        if pushed is not None:
            return pushed
    return insert_all(bind, [spec], on_conflict=on_conflict, dedup_window=dedup_window, now=now)[0]


def _check_debounce(
    key: str | None,
    debounce: float,
    max_wait: float | None,
    delay: float | None,
    run_at: datetime | None,
) -> None:
    if key is None:
        raise ValidationError("debounce needs a correlation_key: it debounces that key")
    if delay is not None or run_at is not None:
        raise ValidationError("debounce sets the start time: give no delay or run_at")
    for name, value in (("debounce", debounce), ("max_wait", max_wait)):
        if value is not None and not serialization.is_seconds(value):
            raise ValidationError(_seconds_message(name, value))
    if max_wait is not None and max_wait < debounce:
        raise ValidationError("max_wait must be at least debounce")


def _debounce(
    bind: Bind,
    spec: InsertSpec,
    debounce: float,
    max_wait: float | None,
    replace: bool,
    now: datetime | None,
) -> int | None:
    """Push back the key's unstarted instance; its id, or None to insert a new one."""
    assert spec.correlation_key is not None
    conn = connection(bind)
    row = store.instances.lock_target(conn, spec.correlation_key)
    if row is None:
        return None
    state = serialization.dumps(spec.state) if replace else None
    store.instances.debounce(conn, row.id, debounce, max_wait, state, now)
    return int(row.id)


def insert_all(
    bind: Bind,
    specs: Iterable[InsertSpec],
    *,
    on_conflict: OnConflict = "return",
    dedup_window: float | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Insert many instances (built with ``Cls.new(...)``) in one statement; return their ids.

    With ``on_conflict="raise"`` a live correlation key anywhere in the batch raises
    :class:`DuplicateInstance` and none of the batch is written.
    """
    check_now(now)
    _check_on_conflict(on_conflict)
    check_window(dedup_window)
    if isinstance(specs, InsertSpec) or not isinstance(specs, Iterable):
        raise ValidationError(f"insert_all takes a list of Cls.new(...) specs, got {specs!r}")
    items = list(specs)
    for spec in items:
        if not isinstance(spec, InsertSpec):
            raise ValidationError(f"insert_all takes specs from Cls.new(...), got {spec!r}")
    if not items:
        return []
    conn = connection(bind)
    trace = tracing.current()  # its steps' spans continue the caller's trace
    rows = items if trace is None else [attrs.evolve(x, trace_context=trace) for x in items]
    if on_conflict == "raise":
        keys = [r.correlation_key for r in rows if r.correlation_key]
        if len(keys) != len(set(keys)):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValidationError(f"correlation key {dup!r} appears twice in one insert_all")
        with conn.begin_nested() as savepoint:
            ids = _insert_rows(conn, rows, now, dedup_window)
            clash = next((r for r, (_, made) in zip(rows, ids, strict=True) if not made), None)
            if clash is not None:
                savepoint.rollback()
                assert clash.correlation_key is not None
                raise DuplicateInstance(clash.correlation_key, ids[rows.index(clash)][0])
    else:
        ids = _insert_rows(conn, rows, now, dedup_window)
    if len(rows) > 1:  # a single row's insert woke its queue itself
        store.notify.notify(conn, [r.queue for r, (_, made) in zip(rows, ids, strict=True) if made])
    emit_insert(rows, ids)
    return [i for i, _ in ids]


def emit_insert(rows: Sequence[InsertSpec], ids: Sequence[tuple[int, bool]]) -> None:
    if not events.active("insert"):
        return
    made = [(i, r) for r, (i, new) in zip(rows, ids, strict=True) if new]
    events.emit(
        "insert",
        instance_ids=[i for i, _ in made],
        fsms=[r.fsm for _, r in made],
        queues=[r.queue for _, r in made],
        existing=len(ids) - len(made),
    )


def check_window(window: float | None) -> None:
    if window is not None and not serialization.is_seconds(window):
        raise ValidationError(_seconds_message("dedup_window", window))


def _seconds_message(name: str, value: object) -> str:
    return f"{name} must be seconds from 0 to {serialization.MAX_SECONDS:.0f}, got {value!r}"


def _insert_rows(
    conn: Connection,
    rows: Sequence[InsertSpec],
    now: datetime | None,
    dedup_window: float | None = None,
) -> list[tuple[int, bool]]:
    """Insert; for rows whose key is live, the live instance's id. (id, created) per row.

    With ``dedup_window``, a key whose instance finished within the window resolves to
    that instance (when no unfinished one has the key) and nothing is inserted for it.
    """
    out: list[tuple[int, bool] | None] = [None] * len(rows)
    todo = list(range(len(rows)))
    if dedup_window is not None:
        keys = sorted({r.correlation_key for r in rows if r.correlation_key})
        if keys:
            live = store.instances.live_ids_by_key(conn, keys)
            recent = store.instances.recently_finished_by_key(conn, keys, dedup_window, now)
            for index, row in enumerate(rows):
                key = row.correlation_key
                if key is not None and key not in live and key in recent:
                    out[index] = (recent[key], False)
            todo = [i for i in todo if out[i] is None]
    for _round in range(5):
        if not todo:
            break
        batch = [rows[i] for i in todo]
        if len(batch) == 1:
            got = [store.inserts.insert_one(conn, batch[0], now)]
        else:
            got = store.inserts.insert_many(conn, batch, now)
        conflicted: list[int] = []
        for index, new_id in zip(todo, got, strict=True):
            if new_id is None:
                conflicted.append(index)
            else:
                out[index] = (new_id, True)
        if not conflicted:
            break
        keys = [k for i in conflicted if (k := rows[i].correlation_key)]
        live = store.instances.live_ids_by_key(conn, keys)
        todo = []
        for index in conflicted:
            key = rows[index].correlation_key
            if key in live:
                out[index] = (live[key], False)
            else:  # the holder finished between the insert and the lookup: try again
                todo.append(index)
        if not todo:
            break
    missing = [rows[i].correlation_key for i, o in enumerate(out) if o is None]
    if missing:
        raise InvalidTransition(f"correlation keys {missing} kept changing hands; try again")
    return [o for o in out if o is not None]
