"""Alembic environment of the library's own revisions.

It runs on the connection it is handed in ``config.attributes["connection"]`` (by
:mod:`gen_durable.migration`, from a user's revision, ``schema.install`` or the CLI) and
never commits a transaction it did not open; without one it connects to
``sqlalchemy.url``. Offline (``--sql``) it writes the SQL to the output buffer.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.schema import CreateSchema

from gen_durable.store import models
from gen_durable.store.migrations import (
    NESTED_ATTRIBUTE,
    ON_STEP_ATTRIBUTE,
    SCHEMA_ATTRIBUTE,
    VERSION_TABLE,
    prepare,
    schema_from_config,
)

config = context.config
schema = schema_from_config(config, context.get_x_argument(as_dictionary=True))
# Revisions read the schema back from here (see target_schema()).
config.attributes[SCHEMA_ATTRIBUTE] = schema


def run_offline() -> None:
    """Write the SQL of the migration instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or None,
        dialect_name="postgresql",
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        target_metadata=models.metadata,
        # Nested in a user's offline run: its script already holds BEGIN/COMMIT.
        transactional_ddl=not config.attributes.get(NESTED_ATTRIBUTE, False),
    )
    with context.begin_transaction():
        context.execute(CreateSchema(schema, if_not_exists=True))
        context.run_migrations()


def run_on(connection: Connection) -> None:
    """Run the migration on ``connection``, inside its transaction if one is open."""
    context.configure(
        connection=connection,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        target_metadata=models.metadata,
        on_version_apply=config.attributes.get(ON_STEP_ATTRIBUTE),
    )
    with context.begin_transaction():
        # The version table lives in the schema, so it must exist before alembic looks.
        prepare(connection, schema)
        context.run_migrations()


def run_online() -> None:
    """Run on the given connection, or on one of our own."""
    given = config.attributes.get("connection")
    if given is not None:
        run_on(given)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection attribute and no sqlalchemy.url to migrate")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
