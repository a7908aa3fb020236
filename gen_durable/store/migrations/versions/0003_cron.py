"""Leadership and cron ticks: gd_leaders and gd_cron_ticks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the two tables (an expand step: older runners ignore them)."""
    schema = target_schema()
    op.create_table(
        "gd_leaders",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_gd_leaders")),
        schema=schema,
    )
    op.create_table(
        "gd_cron_ticks",
        sa.Column("schedule", sa.Text(), nullable=False),
        sa.Column("tick", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "fired_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("schedule", "tick", name=op.f("pk_gd_cron_ticks")),
        schema=schema,
    )


def downgrade() -> None:
    """Drop the two tables."""
    schema = target_schema()
    op.drop_table("gd_cron_ticks", schema=schema)
    op.drop_table("gd_leaders", schema=schema)
