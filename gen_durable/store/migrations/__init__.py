"""The library's alembic environment, shipped in the wheel (branch label ``gen_durable``).

Revisions never name the schema: they ask :func:`target_schema`, which reads the schema
the running environment was given (see :data:`SCHEMA_ATTRIBUTE`) and otherwise falls back
to :func:`gen_durable.models.schema_name`. That fallback is what a user's own environment
gets when it lists this branch in ``version_locations``: it can pick the schema with
:func:`gen_durable.models.configure_schema` or by setting the attribute itself.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection, func, select
from sqlalchemy.schema import CreateSchema

from gen_durable.store import models

BRANCH = "gen_durable"
"""The branch label of the library's revisions."""

VERSION_TABLE = "gd_alembic_version"
"""Where the applied revision is recorded; inside the gen_durable schema, so it never
collides with an application's own ``alembic_version``."""

SCHEMA_ATTRIBUTE = "gd_schema"
"""Key in ``Config.attributes`` naming the schema the revisions apply to."""

NESTED_ATTRIBUTE = "gd_nested"
"""Key in ``Config.attributes`` set when running inside a user's migration."""

ON_STEP_ATTRIBUTE = "gd_on_step"
"""Key in ``Config.attributes`` of a callable run after each revision step is applied
(alembic's ``on_version_apply``, inside the migration's transaction): progress output."""

SCRIPT_LOCATION = Path(__file__).resolve().parent
"""This directory: ``env.py``, ``script.py.mako`` and ``versions/``."""

_LOCK_PREFIX = "gen_durable.migrate:"


def schema_from_config(config: Config, x_arguments: dict[str, str] | None = None) -> str:
    """Resolve the target schema: the config attribute, ``-x schema=``, then the default."""
    name = config.attributes.get(SCHEMA_ATTRIBUTE)
    if not name and x_arguments:
        name = x_arguments.get("schema")
    return validate_schema(name or models.schema_name())


def target_schema() -> str:
    """The schema the revision being run applies to; call it inside ``upgrade()``."""
    from alembic import context

    return schema_from_config(context.config)


def validate_schema(name: object) -> str:
    """Return ``name`` if it can name the gen_durable schema, else raise
    :class:`~gen_durable.errors.ValidationError` (a ``ValueError``)."""
    return models.validate_schema_name(name)


def prepare(connection: Connection, schema: str) -> None:
    """Serialise concurrent migrations of ``schema`` and make sure the schema exists.

    Runs inside the migration's transaction: the advisory lock is held until it ends, so
    two processes installing at once run one after the other instead of racing on
    ``CREATE SCHEMA`` and the version table.
    """
    key = func.hashtext(_LOCK_PREFIX + schema)
    connection.execute(select(func.pg_advisory_xact_lock(key)))
    connection.execute(CreateSchema(schema, if_not_exists=True))
