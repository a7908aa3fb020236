"""The tables (SQLAlchemy 2 declarative), in the logical schema ``gen_durable``.

The real schema is chosen at run time through ``schema_translate_map``
(:data:`SCHEMA_TOKEN` -> the configured schema), so no SQL embeds a schema name.
Lease and heartbeat columns are deliberately unindexed so that those updates are HOT.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gen_durable.store.schema_name import SCHEMA_TOKEN as SCHEMA_TOKEN
from gen_durable.store.schema_name import configure_schema as configure_schema
from gen_durable.store.schema_name import schema_name as schema_name
from gen_durable.store.schema_name import translate_map as translate_map
from gen_durable.store.schema_name import validate_schema_name as validate_schema_name
from gen_durable.types import Status

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUSES = tuple(s.value for s in Status)


class Base(DeclarativeBase):
    """Declarative base of the gen_durable tables."""

    metadata = MetaData(schema=SCHEMA_TOKEN, naming_convention=NAMING)


TS = DateTime(timezone=True)


class Instance(Base):
    """One FSM or job instance: its state, where it is, and who holds it."""

    __tablename__ = "gd_instances"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    fsm: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    status: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text)
    state: Mapped[Any] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    state_version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    """The version of the class's state its ``state`` JSON is in (``state_version = N`` of
    the class; 1 for a class that declares none). Not ``version``, which counts
    transitions (migration 0014)."""
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer)
    run_at: Mapped[datetime | None] = mapped_column(TS)
    correlation_key: Mapped[str | None] = mapped_column(Text)
    concurrency_key: Mapped[str | None] = mapped_column(Text)
    concurrency_limit: Mapped[int | None] = mapped_column(Integer)
    rate_key: Mapped[str | None] = mapped_column(Text)
    rate_weight: Mapped[float | None] = mapped_column(Float)
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(TS)
    await_names: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    await_all: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    await_limit: Mapped[int | None] = mapped_column(Integer)
    timeout_step: Mapped[str | None] = mapped_column(Text)
    await_pack: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    """The ids of the signals the current step's first claim delivered (its pack), so that
    every later attempt of that step gets the same pack; None until a claim builds one."""
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[Any | None] = mapped_column(JSONB)
    parent_id: Mapped[int | None] = mapped_column(BigInteger)
    pending_children: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    join_policy: Mapped[str | None] = mapped_column(Text)
    """While parked by a Spawn: when to resume (``on_failure``); None otherwise."""
    children_from: Mapped[int | None] = mapped_column(BigInteger)
    """The first child id of the latest Spawn: its children are those with an id >= it."""
    trace_context: Mapped[str | None] = mapped_column(Text)
    """The W3C trace context (``traceparent``, then ``tracestate``) of the span that
    inserted it, when tracing was on: its steps' spans continue that trace."""
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(TS)

    __table_args__ = (
        CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in STATUSES) + ")", name="status"),
        CheckConstraint("priority BETWEEN 0 AND 9", name="priority"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("concurrency_limit >= 1", name="concurrency_limit"),
        CheckConstraint("join_policy IN ('wait', 'fail_fast', 'cancel_rest')", name="join_policy"),
        # The picker: runnable rows of a queue in priority, then FIFO order.
        Index(
            "ix_gd_instances_pick",
            "queue",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("status = 'available'"),
        ),
        # Timers: scheduled rows and awaits with a timeout, by due time.
        Index(
            "ix_gd_instances_due",
            "run_at",
            postgresql_where=text("status IN ('scheduled', 'awaiting') AND run_at IS NOT NULL"),
        ),
        # Concurrency keys: how many run per key, and who waits for a free slot.
        Index(
            "ix_gd_instances_key_running",
            "concurrency_key",
            postgresql_where=text("status = 'running' AND concurrency_key IS NOT NULL"),
        ),
        Index(
            "ix_gd_instances_blocked",
            "concurrency_key",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("status = 'blocked'"),
        ),
        # A full key's rows still available, blocked in bulk by a claim (head-of-line).
        Index(
            "ix_gd_instances_key_available",
            "concurrency_key",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("status = 'available' AND concurrency_key IS NOT NULL"),
        ),
        # The reaper scans only running rows; lease_expires_at stays unindexed (HOT).
        Index("ix_gd_instances_running", "id", postgresql_where=text("status = 'running'")),
        # A correlation key is unique among unfinished instances.
        Index(
            "uq_gd_instances_live_key",
            "correlation_key",
            unique=True,
            postgresql_where=text("finished_at IS NULL"),
        ),
        # Reads by key fall back to the newest finished instance.
        Index(
            "ix_gd_instances_key",
            "correlation_key",
            "id",
            postgresql_where=text("correlation_key IS NOT NULL"),
        ),
        Index(
            "ix_gd_instances_finished",
            "finished_at",
            postgresql_where=text("finished_at IS NOT NULL"),
        ),
        Index(
            "ix_gd_instances_parent", "parent_id", postgresql_where=text("parent_id IS NOT NULL")
        ),
    )


class SignalRow(Base):
    """A signal sent to an instance: pending until a step consumes it."""

    __tablename__ = "gd_signals"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    instance_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("gd_instances.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any | None] = mapped_column(JSONB)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    consumed_at: Mapped[datetime | None] = mapped_column(TS)
    consumed_version: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_gd_signals_instance", "instance_id", "id"),
        Index(
            "ix_gd_signals_pending",
            "instance_id",
            "name",
            "id",
            postgresql_where=text("consumed_at IS NULL"),
        ),
        Index(
            "uq_gd_signals_idempotency",
            "instance_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )


class Node(Base):
    """A live runner: its heartbeat and what it can run."""

    __tablename__ = "gd_nodes"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    hostname: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[Any] = mapped_column(JSONB)
    fsms: Mapped[list[str]] = mapped_column(ARRAY(Text))
    started_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    supervisor: Mapped[str | None] = mapped_column(Text)
    """The supervisor (``gen-durable run --processes N``) that started this runner; NULL
    for a runner started on its own (migration 0011)."""
    heartbeat_interval: Mapped[float | None] = mapped_column(Float)
    """Seconds between this runner's heartbeats (NULL: not recorded, an older runner)."""
    reaper_interval: Mapped[float | None] = mapped_column(Float)
    """Seconds between this runner's reaper passes (NULL: not recorded)."""
    known: Mapped[Any | None] = mapped_column(JSONB)
    """Per class, the state versions and steps its code knows: ``{"name": {"versions":
    [...], "steps": [...]}}`` (NULL: an older runner; migration 0014)."""


class RateBucket(Base):
    """A token bucket: its tokens as of ``updated_at``, and a debt set by ``RateLimited``."""

    __tablename__ = "gd_rate_buckets"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(TS)
    debt_until: Mapped[datetime | None] = mapped_column(TS)
    rate: Mapped[float | None] = mapped_column(Float)
    """The limit the last claim applied: ``rate`` tokens every ``period`` seconds, at most
    ``burst`` held (NULL until a claim of a runner that records them)."""
    period: Mapped[float | None] = mapped_column(Float)
    burst: Mapped[float | None] = mapped_column(Float)


class QueueRow(Base):
    """Operator settings of a queue that every runner obeys (pause/resume, a global
    concurrency limit)."""

    __tablename__ = "gd_queues"
    __table_args__ = (
        CheckConstraint(
            "concurrency_limit IS NULL OR concurrency_limit >= 1",
            name="concurrency_limit_positive",
        ),
    )

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    concurrency_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class Leader(Base):
    """A leased leadership role: its owner and a database-time expiry."""

    __tablename__ = "gd_leaders"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(TS)


class CronTick(Base):
    """A cron tick that fired: unique per schedule and tick time (fired once)."""

    __tablename__ = "gd_cron_ticks"

    schedule: Mapped[str] = mapped_column(Text, primary_key=True)
    tick: Mapped[datetime] = mapped_column(TS, primary_key=True)
    instance_id: Mapped[int | None] = mapped_column(BigInteger)
    fired_at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class HistoryRow(Base):
    """One committed step transition, when the class's history setting records it.

    Written in the transaction of the transition itself; deleted with its instance by GC.
    """

    __tablename__ = "gd_history"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    instance_id: Mapped[int] = mapped_column(BigInteger)
    fsm: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    """The instance's transition number when the step ran (its idempotency key's)."""
    attempt: Mapped[int] = mapped_column(Integer)
    from_step: Mapped[str] = mapped_column(Text)
    to_step: Mapped[str | None] = mapped_column(Text)
    """The step the instance goes on with; None when the transition finished it."""
    kind: Mapped[str] = mapped_column(Text)
    """The outcome: next, await, sleep, spawn, rate_limited, retry, done, fail, cancel, error."""
    status: Mapped[str] = mapped_column(Text)
    """The status the transition wrote (available, scheduled, awaiting, done, ...)."""
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    """Type, message and traceback of a step that raised (clipped), or a Fail's reason."""
    at: Mapped[datetime] = mapped_column(TS, server_default=func.now())

    # No foreign key: its check would cost every insert a lookup; GC deletes the rows of
    # the instances it deletes in the same statement.
    __table_args__ = (Index("ix_gd_history_instance", "instance_id", "id"),)


class RerunRow(Base):
    """A claim that ended without its transition landing (migration 0015 says when)."""

    __tablename__ = "gd_reruns"
    __table_args__ = (Index("ix_gd_reruns_instance", "instance_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    instance_id: Mapped[int] = mapped_column(BigInteger)
    fsm: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)  # lease_expired, released or raised
    runner: Mapped[str | None] = mapped_column(Text)  # the claim's holder, when known
    error: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TS, server_default=func.now())


class AuditRow(Base):
    """An operator action (retry, cancel, pause, prune, ...): who did what, and when."""

    __tablename__ = "gd_audit"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    at: Mapped[datetime] = mapped_column(TS, server_default=func.now())
    action: Mapped[str] = mapped_column(Text)
    target: Mapped[str | None] = mapped_column(Text)
    """What the action named: an instance id or correlation key, or a queue."""
    instance_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str | None] = mapped_column(Text)
    details: Mapped[Any | None] = mapped_column(JSONB)


instances = cast(Table, Instance.__table__)
signals = cast(Table, SignalRow.__table__)
nodes = cast(Table, Node.__table__)
leaders = cast(Table, Leader.__table__)
queues = cast(Table, QueueRow.__table__)
rate_buckets = cast(Table, RateBucket.__table__)
cron_ticks = cast(Table, CronTick.__table__)
history = cast(Table, HistoryRow.__table__)
reruns = cast(Table, RerunRow.__table__)
audit = cast(Table, AuditRow.__table__)
metadata = Base.metadata
