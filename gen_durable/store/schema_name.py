"""The configured name of the PostgreSQL schema that holds the gen_durable tables.

The models name :data:`SCHEMA_TOKEN`; every statement translates it to the configured
schema through ``schema_translate_map`` (:func:`translate_map`), so no SQL embeds it.
"""

from __future__ import annotations

import re

from gen_durable.errors import ValidationError

SCHEMA_TOKEN = "gen_durable"
"""The schema name written in the models; translated to the configured schema."""

_schema = SCHEMA_TOKEN


_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,53}")


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it can name the gen_durable schema, else raise ValidationError.

    A plain identifier: a letter or ``_``, then letters, digits and ``_``, at most 54 in
    all, so that its notification channels (``<schema>_wakeup``, ``<schema>_finished``)
    fit PostgreSQL's 63-byte names. The name is quoted wherever it reaches SQL anyway.
    """
    if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
        raise ValidationError(
            "schema must be a plain identifier (a letter or _, then letters, digits or _; "
            f"at most 54 characters), got {name!r:.80}"
        )
    return name


def configure_schema(name: str) -> None:
    """Set the PostgreSQL schema that holds the gen_durable tables (process-wide)."""
    global _schema
    _schema = validate_schema_name(name)


def schema_name() -> str:
    """The configured schema (default ``gen_durable``)."""
    return _schema


def translate_map(schema: str | None = None) -> dict[str | None, str | None]:
    """The ``schema_translate_map`` execution option for the configured schema."""
    return {SCHEMA_TOKEN: schema or _schema}
