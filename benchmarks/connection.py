"""Connection strings and the server a benchmark runs against.

A ``--dsn`` is a libpq URI; the benchmarks connect through SQLAlchemy with psycopg 3
(:func:`sqlalchemy_url`), pgbench through libpq (:func:`libpq_uri`), and name their
connections (:func:`with_app_name`) so that the server-side counters can tell them apart.
Without ``--dsn``, :func:`server` starts a private embedded PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.engine import URL, make_url


def sqlalchemy_url(dsn: str) -> str:
    """A libpq URI (or a SQLAlchemy URL) as a SQLAlchemy URL using psycopg 3."""
    if dsn.startswith("postgresql+"):
        return dsn
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    raise ValueError(f"expected a postgresql:// URI, got {dsn!r}")


def libpq_uri(url: str) -> str:
    """A SQLAlchemy URL as a libpq URI (for pgbench and other libpq tools)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_app_name(url: str, name: str) -> URL:
    return make_url(url).update_query_dict({"application_name": name})


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, description): the given server, or a private embedded one.

    The embedded server runs with its defaults: durable commits (fsync and
    synchronous_commit on), unlike the suite's throwaway test servers.
    """
    if dsn:
        yield sqlalchemy_url(dsn), "given by --dsn"
        return
    from gen_durable import devserver

    with devserver.embedded() as url:
        yield url, "embedded (private, started for this run, defaults)"
