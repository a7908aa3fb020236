"""Re-run evidence: gd_reruns, one row per claim that ended without its transition.

A step whose claim ended before its transition landed runs again: its lease expired and
the reaper took it back (``lease_expired``), its runner released it at shutdown after the
grace period (``released``), or it raised (``raised``, written with the retry's or the
failure's transition). Each row is written in the transaction that ends the claim, so an
operator sees that a step ran more than once, and on which runner.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create gd_reruns (an expand step: an older runner writes none, and still works)."""
    schema = target_schema()
    op.create_table(
        "gd_reruns",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("instance_id", sa.BigInteger(), nullable=False),
        sa.Column("fsm", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("runner", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gd_reruns")),
        schema=schema,
    )
    op.create_index("ix_gd_reruns_instance", "gd_reruns", ["instance_id", "id"], schema=schema)


def downgrade() -> None:
    """Drop gd_reruns (its index goes with it)."""
    op.drop_table("gd_reruns", schema=target_schema())
