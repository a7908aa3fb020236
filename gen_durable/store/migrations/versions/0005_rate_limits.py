"""Rate limits: gd_rate_buckets and gd_instances.rate_key / rate_weight.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the bucket table and the two nullable columns (an expand step)."""
    schema = target_schema()
    op.add_column("gd_instances", sa.Column("rate_key", sa.Text(), nullable=True), schema=schema)
    op.add_column(
        "gd_instances", sa.Column("rate_weight", sa.Float(), nullable=True), schema=schema
    )
    op.create_table(
        "gd_rate_buckets",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("debt_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_gd_rate_buckets")),
        schema=schema,
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    schema = target_schema()
    op.drop_table("gd_rate_buckets", schema=schema)
    op.drop_column("gd_instances", "rate_weight", schema=schema)
    op.drop_column("gd_instances", "rate_key", schema=schema)
