"""Concurrency keys: gd_instances.concurrency_key/limit and the 'blocked' status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "status IN ('scheduled', 'available', 'running', 'awaiting', 'done', 'failed', 'cancelled')"
)
NEW_STATUSES = (
    "status IN ('scheduled', 'available', 'blocked', 'running', 'awaiting', "
    "'done', 'failed', 'cancelled')"
)


def upgrade() -> None:
    """Add the nullable key columns, their indexes, and the 'blocked' status (expand)."""
    schema = target_schema()
    op.add_column(
        "gd_instances", sa.Column("concurrency_key", sa.Text(), nullable=True), schema=schema
    )
    op.add_column(
        "gd_instances", sa.Column("concurrency_limit", sa.Integer(), nullable=True), schema=schema
    )
    op.create_check_constraint(
        op.f("ck_gd_instances_concurrency_limit"),
        "gd_instances",
        "concurrency_limit >= 1",
        schema=schema,
    )
    op.drop_constraint(op.f("ck_gd_instances_status"), "gd_instances", schema=schema)
    op.create_check_constraint(
        op.f("ck_gd_instances_status"), "gd_instances", NEW_STATUSES, schema=schema
    )
    op.create_index(
        "ix_gd_instances_key_running",
        "gd_instances",
        ["concurrency_key"],
        schema=schema,
        postgresql_where=sa.text("status = 'running' AND concurrency_key IS NOT NULL"),
    )
    op.create_index(
        "ix_gd_instances_blocked",
        "gd_instances",
        ["concurrency_key", "priority", "run_at", "id"],
        schema=schema,
        postgresql_where=sa.text("status = 'blocked'"),
    )


def downgrade() -> None:
    """Release blocked rows, then drop what upgrade added."""
    schema = target_schema()
    instances = sa.table("gd_instances", sa.column("status"), schema=schema)
    op.execute(instances.update().where(instances.c.status == "blocked").values(status="available"))
    op.drop_index("ix_gd_instances_blocked", "gd_instances", schema=schema)
    op.drop_index("ix_gd_instances_key_running", "gd_instances", schema=schema)
    op.drop_constraint(op.f("ck_gd_instances_status"), "gd_instances", schema=schema)
    op.create_check_constraint(
        op.f("ck_gd_instances_status"), "gd_instances", OLD_STATUSES, schema=schema
    )
    op.drop_constraint(op.f("ck_gd_instances_concurrency_limit"), "gd_instances", schema=schema)
    op.drop_column("gd_instances", "concurrency_limit", schema=schema)
    op.drop_column("gd_instances", "concurrency_key", schema=schema)
