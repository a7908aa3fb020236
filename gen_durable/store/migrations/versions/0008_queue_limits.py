"""Global concurrency limits per queue: gd_queues.concurrency_limit.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (an expand step: NULL means no global limit, which is what
    older runners assume)."""
    op.add_column(
        "gd_queues",
        sa.Column("concurrency_limit", sa.Integer(), nullable=True),
        schema=target_schema(),
    )
    op.create_check_constraint(
        op.f("ck_gd_queues_concurrency_limit_positive"),
        "gd_queues",
        "concurrency_limit IS NULL OR concurrency_limit >= 1",
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop the column (and its check)."""
    op.drop_column("gd_queues", "concurrency_limit", schema=target_schema())
