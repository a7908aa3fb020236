"""Trace context carried from insert into the steps: gd_instances.trace_context.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (an expand step: older runners neither write nor read it,
    and NULL means no trace to continue)."""
    op.add_column(
        "gd_instances",
        sa.Column("trace_context", sa.Text(), nullable=True),
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("gd_instances", "trace_context", schema=target_schema())
