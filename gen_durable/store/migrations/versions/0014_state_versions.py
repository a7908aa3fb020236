"""Versioned state and rolling deploys: gd_instances.state_version, gd_nodes.known.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from gen_durable.store.migrations import target_schema

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
phase = "expand"
"""Adds only: runners of the release before it keep working (see ``gen-durable migrate``)."""


def upgrade() -> None:
    """Expand: the state version of each row (every existing row is at version 1, what a
    class without ``state_version`` declares; a constant default rewrites no table) and
    what each runner's code knows. An older runner neither reads nor writes either: its
    inserts take the default, its commits leave the column as it is."""
    schema = target_schema()
    op.add_column(
        "gd_instances",
        sa.Column("state_version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        schema=schema,
    )
    op.add_column("gd_nodes", sa.Column("known", JSONB(), nullable=True), schema=schema)


def downgrade() -> None:
    """Drop both columns (a contract step: run it only once no runner of this version is left)."""
    schema = target_schema()
    op.drop_column("gd_nodes", "known", schema=schema)
    op.drop_column("gd_instances", "state_version", schema=schema)
