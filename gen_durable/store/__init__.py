"""The storage layer (L2): every SQL statement of gen_durable as a named function, the
tables (``models``), the schema helpers (``schema``), ``migration`` and the packaged
``migrations``. Imports the domain and L0, SQLAlchemy, psycopg and alembic; never the
client or the runtime.

Each statement function takes a SQLAlchemy Connection (inside the caller's transaction)
and, where time matters, ``now`` (None: the database's ``now()``). Values are always bound
parameters; the schema comes from ``schema_translate_map``.
"""

from __future__ import annotations

from gen_durable.store import (
    audit,
    bulk,
    children,
    claims,
    concurrency,
    cron,
    fleet,
    history,
    inserts,
    instances,
    leases,
    maintenance,
    notify,
    queries,
    queues,
    ratelimits,
    signals,
    transitions,
    upgrades,
)

__all__ = [
    "audit",
    "bulk",
    "children",
    "claims",
    "concurrency",
    "cron",
    "fleet",
    "history",
    "inserts",
    "instances",
    "leases",
    "maintenance",
    "notify",
    "queries",
    "queues",
    "ratelimits",
    "signals",
    "transitions",
    "upgrades",
]
