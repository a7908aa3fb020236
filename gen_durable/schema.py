"""Install, upgrade and check the gen_durable schema (temporary stub: create_all)."""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

from gen_durable import models


def install(bind: Engine | Connection, schema: str | None = None) -> None:
    """Create or upgrade the gen_durable tables in ``schema`` (default: configured)."""
    name = schema or models.schema_name()
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            install(conn, schema)
        return
    from sqlalchemy.schema import CreateSchema

    bind.execute(CreateSchema(name, if_not_exists=True))
    models.metadata.create_all(
        bind.execution_options(schema_translate_map=models.translate_map(name))
    )
    _ = text
