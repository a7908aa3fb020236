"""The supervisor a runner process belongs to: gd_nodes.supervisor.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-14
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (an expand step: an older runner neither writes nor reads
    it, and NULL means a runner started on its own, not by ``gen-durable run --processes``)."""
    op.add_column(
        "gd_nodes",
        sa.Column("supervisor", sa.Text(), nullable=True),
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("gd_nodes", "supervisor", schema=target_schema())
