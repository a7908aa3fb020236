"""Install, upgrade and check the gen_durable schema, at its documented path.

The helpers live in :mod:`gen_durable.store.schema`; this module keeps
``from gen_durable import schema`` and ``gen_durable.schema.install(...)`` working.
"""

from __future__ import annotations

from gen_durable.store.schema import check, install, needs_upgrade

__all__ = ["check", "install", "needs_upgrade"]
