"""The new row's one record: :class:`InsertSpec`, from ``Cls.new``/``insert``/``Spawn``/cron
down to the INSERT."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict, Unpack

import attrs

from gen_durable.domain import serialization
from gen_durable.domain.options import check_attempts, check_limit, check_priority
from gen_durable.domain.registry import Definable, resolve
from gen_durable.domain.routing import concurrency_key_of, rate_bucket_of
from gen_durable.errors import ValidationError
from gen_durable.types import JSON


class InsertOptions(TypedDict, total=False):
    """The options a new instance takes: of ``Cls.new``, ``insert`` and ``signal(start=)``.

    Declared once here; those functions take them as ``**options`` (typed: a checker
    sees each keyword) and :meth:`InsertSpec.build` validates them.
    """

    state: Any
    """An FSM's state (JSON, or its ``State`` type); None: ``{}``, or for a typed class a
    ``State`` built from no fields."""
    args: Any
    """A Job's args (JSON, or its ``Args`` type); a Job takes ``args``, not ``state``.
    None: ``{}``, or an ``Args`` built from no fields."""
    correlation_key: str | None
    """A name for the instance, unique among unfinished instances."""
    queue: str | None
    """The queue; None: the class's ``queue`` option."""
    priority: int | None
    """0 to 9, lower claimed first; None: the class's ``priority`` option."""
    delay: float | None
    """Seconds until the instance may run (it is ``scheduled`` until then)."""
    run_at: datetime | None
    """A timezone-aware time the instance may run from (instead of ``delay``)."""
    max_attempts: int | None
    """Attempts per step; None: the class's ``max_attempts`` option."""
    concurrency_key: str | None
    """The concurrency key; None: what the class's ``concurrency_key`` function gives."""
    concurrency_limit: int | None
    """How many instances with the key may run at once; None: the class's
    ``concurrency_limit`` option."""


OPTION_NAMES = frozenset(InsertOptions.__annotations__)


@attrs.frozen
class InsertSpec:
    """One instance to insert: built by ``Cls.new(...)``, validated when built.

    It is the new row's one record, from ``Cls.new``/``insert``/``Spawn``/cron down to the
    INSERT: the storage layer takes its statement's columns from the fields marked with a
    column kind (``metadata["column"]``) and from :attr:`fsm` and :attr:`step`, so a new
    column that insert writes is one field here.
    """

    cls: Definable
    state: JSON = attrs.field(metadata={"column": "jsonb"})
    correlation_key: str | None = attrs.field(metadata={"column": "text"})
    queue: str = attrs.field(metadata={"column": "text"})
    priority: int = attrs.field(metadata={"column": "int"})
    delay: float | None = attrs.field(metadata={"column": "float"})
    """Seconds from the database's now until it may run (the INSERT turns it into run_at)."""
    run_at: datetime | None = attrs.field(metadata={"column": "tsz"})
    max_attempts: int = attrs.field(metadata={"column": "int"})
    concurrency_key: str | None = attrs.field(default=None, metadata={"column": "text"})
    concurrency_limit: int | None = attrs.field(default=None, metadata={"column": "int"})
    rate_key: str | None = attrs.field(default=None, metadata={"column": "text"})
    rate_weight: float | None = attrs.field(default=None, metadata={"column": "float"})
    parent_id: int | None = attrs.field(default=None, metadata={"column": "bigint"})
    """Set by the commit of the Spawn that inserts it as a child."""
    trace_context: str | None = attrs.field(default=None, metadata={"column": "text"})
    """The span that inserted it (tracing on): its steps' spans continue that trace."""
    state_version: int = attrs.field(
        default=attrs.Factory(lambda spec: spec.cls.state_version, takes_self=True),
        metadata={"column": "int"},
    )
    """The class's ``state_version``: a new row's state is in the code's version."""

    @property
    def fsm(self) -> str:
        """The class's registry name (the ``fsm`` column)."""
        return self.cls.name

    @property
    def step(self) -> str:
        """The step the instance starts at."""
        return self.cls._gd_initial

    @classmethod
    def build(cls, definition: Definable | str, **options: Unpack[InsertOptions]) -> InsertSpec:
        """Validate every option and the state/args against the class's type."""
        unknown = sorted(set(options) - OPTION_NAMES)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}")
        state, args = options.get("state"), options.get("args")
        correlation_key = options.get("correlation_key")
        queue, priority = options.get("queue"), options.get("priority")
        delay, run_at = options.get("delay"), options.get("run_at")
        max_attempts = options.get("max_attempts")
        concurrency_key = options.get("concurrency_key")
        concurrency_limit = options.get("concurrency_limit")
        target = resolve(definition)
        if state is not None and args is not None:
            raise ValidationError("give state= or args=, not both")
        if target._gd_kind == "job" and state is not None:
            raise ValidationError(f"{target.name} is a Job: pass args=, not state=")
        if target._gd_kind == "fsm" and args is not None:
            raise ValidationError(f"{target.name} is an FSM: pass state=, not args=")
        value = state if state is not None else args
        type_ = target._gd_state_type
        if value is None:
            value = {}  # typed: built from no fields, or InvalidState names the missing ones
        what = "args" if target._gd_kind == "job" else "state"
        data = serialization.validate_state(value, type_, what)
        if correlation_key is not None:
            serialization.check_text(correlation_key, "correlation_key")
        queue = serialization.check_text(target.queue if queue is None else queue, "queue")
        priority = target.priority if priority is None else priority
        check_priority(priority)
        if delay is not None and run_at is not None:
            raise ValidationError("give delay= or run_at=, not both")
        if delay is not None and not serialization.is_seconds(delay):
            raise ValidationError(
                f"delay must be seconds from 0 to {serialization.MAX_SECONDS:.0f}, got {delay!r}"
            )
        serialization.check_moment(run_at, "run_at")
        attempts = target.max_attempts if max_attempts is None else max_attempts
        check_attempts(attempts)
        if concurrency_key is None:
            concurrency_key = concurrency_key_of(target, data)
        else:
            serialization.check_text(concurrency_key, "concurrency_key")
        limit = target.concurrency_limit if concurrency_limit is None else concurrency_limit
        check_limit(limit)
        bucket = rate_bucket_of(target, target._gd_initial, lambda: data)
        return cls(
            cls=target,
            state=data,
            correlation_key=correlation_key,
            queue=queue,
            priority=priority,
            delay=float(delay) if delay is not None else None,
            run_at=run_at,
            max_attempts=attempts,
            concurrency_key=concurrency_key,
            concurrency_limit=limit if concurrency_key is not None else None,
            rate_key=bucket[0] if bucket else None,
            rate_weight=bucket[1] if bucket else None,
        )


def key_taken(key: str | None, holder: int | None) -> JSON:
    """The error of a child born failed because an unfinished instance holds its key."""
    return {
        "type": "DuplicateInstance",
        "message": f"an unfinished instance with correlation key {key!r} exists (id {holder})",
        "correlation_key": key,
        "existing_id": holder,
    }
