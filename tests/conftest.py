"""PostgreSQL fixtures for the suite (DESIGN.md section 6).

One server per session (see :mod:`_support.dbutil` for how it is chosen) and one template
database with the gen_durable schema installed. Isolation per test:

- ``db_url`` / ``engine``: a fresh database cloned from the template, dropped afterwards.
  Use it wherever a Runner, a second process or LISTEN is involved.
- ``conn`` / ``session``: one connection to a session-wide database inside an outer
  transaction that is rolled back at the end. For API-only tests; never commit ``conn``.

Markers set here: a test that uses one of these fixtures is ``contract`` and ``db``; the
chaos suite (its own servers) is ``db`` as well; every other test is ``unit``, so
``pytest -m unit`` runs the database-free tier and ``pytest -m db`` the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from _support.dbutil import DatabaseFactory, Server, provision_server
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session

DB_FIXTURES = frozenset(
    {
        "pg_server",
        "server_url",
        "db_factory",
        "make_db_url",
        "db_url",
        "engine",
        "shared_engine",
        "conn",
        "session",
    }
)
POOL = {"pool_size": 30, "max_overflow": 20}
_FACTORY = pytest.StashKey[tuple[Server, DatabaseFactory]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.contract)
            item.add_marker(pytest.mark.db)
        elif item.get_closest_marker("chaos") is not None:
            item.add_marker(pytest.mark.db)
        else:
            item.add_marker(pytest.mark.unit)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    found = config.stash.get(_FACTORY, None)
    if found is None:
        return
    server, factory = found
    mean_ms = 1000 * factory.clone_seconds / max(factory.clones, 1)
    terminalreporter.write_line(
        f"PostgreSQL from {server.source}: {factory.clones} databases cloned from the template, "
        f"{mean_ms:.0f} ms each on average"
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    """The session's server (``GEN_DURABLE_TEST_DSN``, else embedded, else a container)."""
    with provision_server() as server:
        yield server


@pytest.fixture(scope="session")
def server_url(pg_server: Server) -> str:
    """SQLAlchemy URL of the server's admin database, to create databases of one's own."""
    return pg_server.url


@pytest.fixture(scope="session")
def db_factory(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[DatabaseFactory]:
    """Creates/drops databases; builds the session's template with the schema installed."""
    from gen_durable.store import schema

    factory = DatabaseFactory(pg_server.url)
    try:
        version, _ = factory.server_info()
        if version < 150000:
            pytest.fail(f"gen_durable needs PostgreSQL >= 15, the test server is {version}")
        factory.sweep_stale()
        factory.create_template(factory.template, schema.install)
        request.config.stash[_FACTORY] = (pg_server, factory)
        yield factory
        factory.drop(factory.template)
    finally:
        factory.close()


@pytest.fixture
def make_db_url(db_factory: DatabaseFactory) -> Iterator[Callable[[], str]]:
    """Call it for another fresh database cloned from the template (all dropped after)."""
    names: list[str] = []

    def make() -> str:
        names.append(db_factory.new_name())
        return db_factory.create(names[-1], template=db_factory.template)

    yield make
    for name in names:
        db_factory.drop(name)


@pytest.fixture
def two_engines(make_db_url: Callable[[], str]) -> Iterator[tuple[Engine, Engine]]:
    """Engines on two fresh, identical databases: one path in each, then compared."""
    engines = (create_engine(make_db_url()), create_engine(make_db_url()))
    yield engines
    for e in engines:
        e.dispose()


@pytest.fixture
def db_url(make_db_url: Callable[[], str]) -> str:
    """SQLAlchemy URL of a fresh database with the schema, private to this test."""
    return make_db_url()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` with a pool large enough for a Runner."""
    eng = create_engine(db_url, **POOL)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def shared_engine(db_factory: DatabaseFactory) -> Iterator[Engine]:
    """An engine on the session-wide database; tests must not commit through it."""
    name = db_factory.prefix + "shared"
    eng = create_engine(db_factory.create(name, template=db_factory.template), **POOL)
    yield eng
    eng.dispose()
    db_factory.drop(name)


@pytest.fixture
def conn(shared_engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that is rolled back after the test."""
    with shared_engine.connect() as connection:
        outer = connection.begin()
        try:
            yield connection
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def session(conn: Connection) -> Iterator[Session]:
    """A Session on ``conn``: its commits release savepoints, all is rolled back after."""
    with Session(bind=conn, join_transaction_mode="create_savepoint") as sess:
        yield sess
