"""Contributors' alembic environment for gen_durable's own revisions (see alembic.ini).

Differs from the shipped gen_durable/store/migrations/env.py only in what authoring needs: a
DSN from ``-x dsn=`` or ``GEN_DURABLE_DSN``, logging from alembic.ini, and autogenerate
against gen_durable.models (numbered revision ids, schema-neutral output).
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.operations.ops import MigrationScript
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, create_engine, pool
from sqlalchemy.schema import CreateSchema

from gen_durable.cli import sqlalchemy_url
from gen_durable.store import models
from gen_durable.store.migrations import (
    SCHEMA_ATTRIBUTE,
    VERSION_TABLE,
    prepare,
    schema_from_config,
)

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

x_args = context.get_x_argument(as_dictionary=True)
schema = schema_from_config(config, x_args)
config.attributes[SCHEMA_ATTRIBUTE] = schema


def target_metadata() -> MetaData:
    """The models, placed in the schema being compared."""
    if schema == models.SCHEMA_TOKEN:
        return models.metadata
    copy = MetaData(schema=schema, naming_convention=models.NAMING)
    for table in models.metadata.sorted_tables:
        table.to_metadata(copy, schema=schema)
    return copy


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Compare only our schema, and never the version table."""
    if type_ == "schema":
        return name == schema
    return not (type_ == "table" and name == VERSION_TABLE)


def number_revisions(ctx: Any, revision: Any, directives: list[MigrationScript]) -> None:
    """Give a new revision the next four-digit id unless one was passed (--rev-id)."""
    scripts = ScriptDirectory.from_config(config)
    taken = [int(s.revision) for s in scripts.walk_revisions() if s.revision.isdigit()]
    for script in directives:
        if not (script.rev_id or "").isdigit():
            script.rev_id = f"{max(taken, default=0) + 1:04d}"


COMMON: dict[str, Any] = {
    "version_table": VERSION_TABLE,
    "version_table_schema": schema,
    "target_metadata": target_metadata(),
    "include_schemas": True,
    "include_name": include_name,
    "compare_server_default": True,
    "process_revision_directives": number_revisions,
    # script.py.mako replaces this name in rendered ops with `schema`.
    "template_args": {"gd_schema": schema},
}


def dsn() -> str:
    """The database to work on."""
    found = x_args.get("dsn") or os.environ.get("GEN_DURABLE_DSN")
    found = found or config.get_main_option("sqlalchemy.url")
    if not found:
        raise SystemExit("set GEN_DURABLE_DSN or pass -x dsn=postgresql://... to alembic")
    return found


def run_offline() -> None:
    """Print the SQL (``alembic upgrade --sql``)."""
    context.configure(dialect_name="postgresql", literal_binds=True, **COMMON)
    with context.begin_transaction():
        context.execute(CreateSchema(schema, if_not_exists=True))
        context.run_migrations()


def run_online() -> None:
    """Migrate (or autogenerate against) the database."""
    engine = create_engine(sqlalchemy_url(dsn()), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **COMMON)
            with context.begin_transaction():
                prepare(connection, schema)
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
