"""The index of keyed rows still available: ix_gd_instances_key_available.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the partial index a claim walks to block a full key's rows in bulk (an expand
    step: an older runner neither needs nor minds it; it holds keyed rows only)."""
    op.create_index(
        "ix_gd_instances_key_available",
        "gd_instances",
        ["concurrency_key", "priority", "run_at", "id"],
        schema=target_schema(),
        postgresql_where=sa.text("status = 'available' AND concurrency_key IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_gd_instances_key_available", "gd_instances", schema=target_schema())
