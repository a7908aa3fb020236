<%!
    import re

    def neutral(text, name):
        # Autogenerate writes the compared schema's name; a revision must not (the schema
        # is chosen at run time), so point it at the `schema` local instead.
        if not text or not name:
            return text
        quoted = re.escape(name)
        text = re.sub(r"""(\w*schema)=(['"])""" + quoted + r"\2", r"\1=schema", text)
        return re.sub(r"""(['"])""" + quoted + r"""\.([\w.]+)\1""", r'f"{schema}.\2"', text)
%>\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from gen_durable.migrations import target_schema

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    """Apply ${up_revision}: ${message}."""
    schema = target_schema()
    ${neutral(upgrades, context.get("gd_schema")) if upgrades else "pass"}


def downgrade() -> None:
    """Revert ${up_revision}."""
    schema = target_schema()
    ${neutral(downgrades, context.get("gd_schema")) if downgrades else "pass"}
