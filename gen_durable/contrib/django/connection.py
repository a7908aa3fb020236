"""A SQLAlchemy Connection on Django's own database connection (ADR 0003).

The client API takes a SQLAlchemy Session or Connection. Here that Connection is made on
the psycopg connection Django holds for the alias in this thread, so every statement
runs in Django's transaction: the ``transaction.atomic()`` block the caller is in commits
or rolls it back, and nothing here ever commits, rolls back or closes that connection.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from psycopg.adapt import AdaptersMap
from psycopg.types.json import JsonbBinaryLoader, JsonbLoader
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from gen_durable.contrib.django.settings import options

__all__ = ["connection"]


class Borrowed:
    """Django's psycopg connection as SQLAlchemy's pool sees it.

    Its transaction belongs to Django: ``commit``, ``rollback`` and ``close`` do nothing
    (SQLAlchemy calls them when its Connection is closed or its pool returns it). Its
    cursors load ``jsonb`` as JSON, as SQLAlchemy expects: Django's connection loads it as
    text (its JSONField decodes it), which only cursors made here override.
    Everything else is the connection's own.
    """

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self._raw = raw
        self.adapters = AdaptersMap(raw.adapters)
        self.adapters.register_loader("jsonb", JsonbLoader)
        self.adapters.register_loader("jsonb", JsonbBinaryLoader)

    def cursor(self, *args: Any, **kwargs: Any) -> psycopg.Cursor[Any]:
        # A server-binding cursor, as SQLAlchemy's psycopg dialect uses (Django's own binds
        # on the client unless its OPTIONS say otherwise); a named one is server-side
        # (SQLAlchemy's stream_results).
        cur: psycopg.Cursor[Any] = (
            self._raw.cursor(*args, **kwargs) if args or kwargs else psycopg.Cursor(self._raw)
        )
        for loader in (JsonbLoader, JsonbBinaryLoader):
            cur.adapters.register_loader("jsonb", loader)
        return cur

    def commit(self) -> None:
        """Django commits."""

    def rollback(self) -> None:
        """Django rolls back."""

    def close(self) -> None:
        """Django closes its connection."""

    def add_notice_handler(self, handler: Any) -> None:
        """The dialect would add one per borrow to Django's connection: it keeps its own."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


@functools.cache
def _engine(alias: str) -> Engine:
    def borrow() -> Borrowed:
        wrapper = connections[alias]
        wrapper.ensure_connection()
        if not isinstance(wrapper.connection, psycopg.Connection):
            raise ImproperlyConfigured(
                f"gen_durable needs DATABASES[{alias!r}] on PostgreSQL through psycopg 3 "
                f"(django.db.backends.postgresql with psycopg installed), not {wrapper.vendor} "
                f"through {type(wrapper.connection).__module__}"
            )
        return Borrowed(wrapper.connection)

    # NullPool: every checkout borrows the connection Django holds in the calling thread
    # now (Django's connections are per thread and may be replaced between requests).
    return create_engine(
        "postgresql+psycopg://",
        creator=borrow,
        poolclass=NullPool,
        pool_reset_on_return=None,
        use_native_hstore=False,  # it would register hstore on Django's connection
    )


@contextlib.contextmanager
def connection(using: str | None = None) -> Iterator[Connection]:
    """A SQLAlchemy Connection in Django's transaction on database ``using``.

    Pass it to any client function (``gen_durable.insert(conn, ...)``). Inside a
    ``transaction.atomic()`` block it joins that block's transaction; outside one, it
    opens ``transaction.atomic(using)`` around its own use, which commits when the
    ``with`` ends, as Django's autocommit does for each ORM write. A typed error from a
    client function leaves the block's transaction usable (the function ran in a
    savepoint).

    ``using`` is a ``DATABASES`` alias (default: ``GEN_DURABLE["DATABASE"]``).
    """
    alias = using or options()["DATABASE"]
    django_conn = connections[alias]
    django_conn.validate_no_broken_transaction()
    with (
        contextlib.nullcontext() if django_conn.in_atomic_block else transaction.atomic(alias),
        _engine(alias).connect() as conn,
    ):
        yield conn
