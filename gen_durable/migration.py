"""gen_durable's revisions from a user's own alembic revision, at the documented path.

The functions live in :mod:`gen_durable.store.migration`; this module keeps
``gen_durable.migration.upgrade()`` and its neighbours working.
"""

from __future__ import annotations

from gen_durable.store.migration import (
    config,
    current,
    downgrade,
    downgrade_bind,
    head,
    script_directory,
    steps,
    upgrade,
    upgrade_bind,
)

__all__ = [
    "config",
    "current",
    "downgrade",
    "downgrade_bind",
    "head",
    "script_directory",
    "steps",
    "upgrade",
    "upgrade_bind",
]
