"""The operator's records: each runner's own timing (gd_nodes.heartbeat_interval,
reaper_interval) and each rate-limit bucket's limit (gd_rate_buckets.rate, period, burst).

``gen-durable why`` and ``workers`` read them: a runner's silence is judged against its own
heartbeat interval, and a bucket's refill is told without importing the class it limits.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gen_durable.store.migrations import target_schema

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = {
    "gd_nodes": ("heartbeat_interval", "reaper_interval"),
    "gd_rate_buckets": ("rate", "period", "burst"),
}


def upgrade() -> None:
    """Add the nullable columns (an expand step: an older runner neither writes nor reads
    them, and NULL means "not recorded")."""
    for table, columns in _COLUMNS.items():
        for name in columns:
            op.add_column(table, sa.Column(name, sa.Float(), nullable=True), schema=target_schema())


def downgrade() -> None:
    """Drop the columns."""
    for table, columns in _COLUMNS.items():
        for name in columns:
            op.drop_column(table, name, schema=target_schema())
