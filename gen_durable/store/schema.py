"""Install, upgrade and check the gen_durable schema, through the packaged migrations."""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine

from gen_durable.errors import ConfigurationError
from gen_durable.store import migration, models

log = logging.getLogger("gen_durable.schema")  # the name users configure

_HOW_TO_MIGRATE = (
    "run `gen-durable migrate --dsn ... --schema {schema}`, call "
    "gen_durable.migration.upgrade() from your own alembic revision, or "
    "gen_durable.schema.install(engine)"
)


def install(bind: Engine | Connection, schema: str | None = None) -> None:
    """Create or upgrade the gen_durable tables in ``schema`` (default: configured).

    Idempotent, and safe to call from several processes at once (they serialise on an
    advisory lock). An Engine gets its own committed transaction; a Connection in a
    transaction is used as is and the caller commits.
    """
    migration.upgrade_bind(bind, "heads", schema)


def needs_upgrade(bind: Engine | Connection, schema: str | None = None) -> bool:
    """True when ``schema`` is missing or behind the revisions this library ships."""
    at = migration.current(bind, schema)
    return at is None or (at != migration.head() and _is_known(at))


def check(bind: Engine | Connection, schema: str | None = None) -> None:
    """Raise :class:`ConfigurationError` unless the database can serve this library.

    The database must be at this library's head revision. A revision this library does
    not know is taken as one from a newer gen_durable (schema changes are expand/contract,
    so an older library keeps working during a rolling upgrade) and only logged.
    """
    name = schema or models.schema_name()
    at = migration.current(bind, name)
    want = migration.head()
    how = _HOW_TO_MIGRATE.format(schema=name)
    if at is None:
        raise ConfigurationError(
            f"the gen_durable schema {name!r} is not installed in this database; {how}"
        )
    if at == want:
        return
    if _is_known(at):
        raise ConfigurationError(
            f"the gen_durable schema {name!r} is at revision {at}, this library needs "
            f"{want}; {how}"
        )
    log.warning(
        "gen_durable schema %r is at revision %s, unknown to this library (head %s); "
        "assuming a newer gen_durable migrated it",
        name,
        at,
        want,
    )


def _is_known(revision: str) -> bool:
    scripts = migration.script_directory()
    return any(s.revision == revision for s in scripts.walk_revisions())
