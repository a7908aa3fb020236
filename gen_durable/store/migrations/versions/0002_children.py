"""Child fan-out and join: gd_instances.join_policy and gd_instances.children_from.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the two nullable columns (an expand step: older runners ignore them)."""
    schema = target_schema()
    op.add_column("gd_instances", sa.Column("join_policy", sa.Text(), nullable=True), schema=schema)
    op.add_column(
        "gd_instances", sa.Column("children_from", sa.BigInteger(), nullable=True), schema=schema
    )
    op.create_check_constraint(
        op.f("ck_gd_instances_join_policy"),
        "gd_instances",
        "join_policy IN ('wait', 'fail_fast', 'cancel_rest')",
        schema=schema,
    )


def downgrade() -> None:
    """Drop the columns (their check constraint goes with them)."""
    schema = target_schema()
    op.drop_constraint(
        op.f("ck_gd_instances_join_policy"), "gd_instances", type_="check", schema=schema
    )
    op.drop_column("gd_instances", "children_from", schema=schema)
    op.drop_column("gd_instances", "join_policy", schema=schema)
