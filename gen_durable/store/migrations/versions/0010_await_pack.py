"""The pack a step received, recorded at claim: gd_instances.await_pack.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from gen_durable.store.migrations import target_schema

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable column (an expand step: an older runner neither writes nor reads
    it, and NULL means that the next claim builds the pack from what is pending)."""
    op.add_column(
        "gd_instances",
        sa.Column("await_pack", postgresql.ARRAY(sa.BigInteger()), nullable=True),
        schema=target_schema(),
    )


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("gd_instances", "await_pack", schema=target_schema())
