"""Initial tables: gd_instances, gd_signals, gd_nodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateSchema

from gen_durable.store.migrations import BRANCH, target_schema

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = (BRANCH,)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the schema (when run from a foreign environment) and the three tables."""
    schema = target_schema()
    # Our own env.py has created it already; an application environment that lists this
    # branch in its version_locations has not.
    op.execute(CreateSchema(schema, if_not_exists=True))

    op.create_table(
        "gd_instances",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("fsm", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column(
            "state",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", TS, nullable=True),
        sa.Column("correlation_key", sa.Text(), nullable=True),
        sa.Column("lease_token", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("await_names", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("await_all", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("await_limit", sa.Integer(), nullable=True),
        sa.Column("timeout_step", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        sa.Column("error", postgresql.JSONB(), nullable=True),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("pending_children", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('scheduled', 'available', 'running', 'awaiting', "
            "'done', 'failed', 'cancelled')",
            name=op.f("ck_gd_instances_status"),
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 9", name=op.f("ck_gd_instances_priority")),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_gd_instances_max_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gd_instances")),
        schema=schema,
    )
    op.create_index(
        "ix_gd_instances_pick",
        "gd_instances",
        ["queue", "priority", "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("status = 'available'"),
    )
    op.create_index(
        "ix_gd_instances_due",
        "gd_instances",
        ["run_at"],
        schema=schema,
        postgresql_where=sa.text("status IN ('scheduled', 'awaiting') AND run_at IS NOT NULL"),
    )
    op.create_index(
        "ix_gd_instances_running",
        "gd_instances",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "uq_gd_instances_live_key",
        "gd_instances",
        ["correlation_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("finished_at IS NULL"),
    )
    op.create_index(
        "ix_gd_instances_key",
        "gd_instances",
        ["correlation_key", "id"],
        schema=schema,
        postgresql_where=sa.text("correlation_key IS NOT NULL"),
    )
    op.create_index(
        "ix_gd_instances_finished",
        "gd_instances",
        ["finished_at"],
        schema=schema,
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_index(
        "ix_gd_instances_parent",
        "gd_instances",
        ["parent_id"],
        schema=schema,
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )

    op.create_table(
        "gd_signals",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("created_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("consumed_at", TS, nullable=True),
        sa.Column("consumed_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gd_signals")),
        schema=schema,
    )
    op.create_foreign_key(
        op.f("fk_gd_signals_instance_id_gd_instances"),
        "gd_signals",
        "gd_instances",
        ["instance_id"],
        ["id"],
        source_schema=schema,
        referent_schema=schema,
        ondelete="CASCADE",
    )
    op.create_index(
        "ix_gd_signals_instance",
        "gd_signals",
        ["instance_id", "id"],
        schema=schema,
    )
    op.create_index(
        "ix_gd_signals_pending",
        "gd_signals",
        ["instance_id", "name", "id"],
        schema=schema,
        postgresql_where=sa.text("consumed_at IS NULL"),
    )
    op.create_index(
        "uq_gd_signals_idempotency",
        "gd_signals",
        ["instance_id", "idempotency_key"],
        unique=True,
        schema=schema,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )

    op.create_table(
        "gd_nodes",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", postgresql.JSONB(), nullable=False),
        sa.Column("fsms", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("started_at", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("heartbeat_at", TS, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gd_nodes")),
        schema=schema,
    )


def downgrade() -> None:
    """Drop the tables; the schema stays, since it holds the version table."""
    schema = target_schema()
    op.drop_table("gd_nodes", schema=schema)
    # Dropping a table drops its indexes and the foreign key with it.
    op.drop_table("gd_signals", schema=schema)
    op.drop_table("gd_instances", schema=schema)
