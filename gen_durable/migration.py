"""gen_durable's revisions from a user's own alembic revision, at the documented path.

The functions live in :mod:`gen_durable.store.migration`; this module keeps
``gen_durable.migration.upgrade()`` and its neighbours working.
"""

from __future__ import annotations

# The documented names are store.migration's __all__.
from gen_durable.store.migration import *  # noqa: F403
from gen_durable.store.migration import __all__ as __all__
