"""The ``GEN_DURABLE`` setting of a Django project, with its defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.engine import URL

__all__ = ["Options", "database_url", "entry_url", "options"]

_ENGINE = "django.db.backends.postgresql"
_DJANGO_OPTIONS = frozenset(
    {"pool", "server_side_binding", "isolation_level", "assume_role", "prepare_threshold"}
)


class Options(TypedDict):
    """The keys of ``settings.GEN_DURABLE`` (every one optional)."""

    DATABASE: str
    """The alias in ``DATABASES`` that holds the gen_durable tables (default ``default``)."""
    SCHEMA: str | None
    """The PostgreSQL schema of the tables (None: ``gen_durable``)."""
    MODULES: tuple[str, ...]
    """Submodule names imported from every installed app at start-up, so that the FSM and
    Job classes they define are registered (default ``("flows",)``)."""
    DASHBOARD_URL: str | None
    """Where the gen_durable dashboard is mounted: the admin links to it (None: no link)."""


DEFAULTS = Options(DATABASE="default", SCHEMA=None, MODULES=("flows",), DASHBOARD_URL=None)


def options() -> Options:
    """``settings.GEN_DURABLE`` over the defaults; unknown keys are a configuration error."""
    given: dict[str, Any] = dict(getattr(settings, "GEN_DURABLE", None) or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"GEN_DURABLE has unknown keys {unknown}; known: {sorted(DEFAULTS)}"
        )
    merged: dict[str, Any] = {**DEFAULTS, **given}
    return Options(
        DATABASE=str(merged["DATABASE"]),
        SCHEMA=merged["SCHEMA"],
        MODULES=tuple(merged["MODULES"]),
        DASHBOARD_URL=merged["DASHBOARD_URL"],
    )


def database_url(alias: str | None = None) -> URL:
    """A SQLAlchemy URL (psycopg 3) for the ``DATABASES`` entry ``alias``.

    For the worker and the migrations, which open connections of their own; the client
    functions use Django's connection itself.
    """
    alias = alias or options()["DATABASE"]
    try:
        db: Mapping[str, Any] = settings.DATABASES[alias]
    except KeyError:
        raise ImproperlyConfigured(f"GEN_DURABLE: no database {alias!r} in DATABASES") from None
    return entry_url(db, alias)


def entry_url(db: Mapping[str, Any], alias: str) -> URL:
    """The URL of one ``DATABASES`` entry (see :func:`database_url`)."""
    if db.get("ENGINE") != _ENGINE:
        raise ImproperlyConfigured(
            f"GEN_DURABLE: DATABASES[{alias!r}] must use {_ENGINE} (psycopg 3), "
            f"not {db.get('ENGINE')!r}"
        )
    query = {
        key: str(value)
        for key, value in dict(db.get("OPTIONS") or {}).items()
        # Django's own options, not libpq's: they have no meaning for a new connection.
        if key not in _DJANGO_OPTIONS and isinstance(value, str | int)
    }
    host = db.get("HOST") or None
    if host is not None and host.startswith("/"):  # a socket directory: libpq's host=
        query["host"] = host
        host = None
    return URL.create(
        "postgresql+psycopg",
        username=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=host,
        port=int(db["PORT"]) if db.get("PORT") else None,
        database=db.get("NAME") or None,
        query=query,
    )
