"""Smoke tests of the database fixtures themselves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

TABLES = {"gd_instances", "gd_signals", "gd_nodes"}
LIST_TABLES = text("SELECT tablename FROM pg_tables WHERE schemaname = 'gen_durable'")


def test_server_is_postgresql_15_or_later(engine: Engine) -> None:
    with engine.connect() as c:
        version = c.execute(text("SHOW server_version_num")).scalar_one()
    assert int(version) >= 150000


def test_template_has_the_schema(engine: Engine, session: Session) -> None:
    with engine.connect() as c:
        assert set(c.execute(LIST_TABLES).scalars()) >= TABLES
    assert set(session.execute(LIST_TABLES).scalars()) >= TABLES


def test_databases_are_independent(db_url: str, make_db_url: Callable[[], str]) -> None:
    other_url = make_db_url()
    assert other_url != db_url
    first, other = create_engine(db_url), create_engine(other_url)
    try:
        with first.begin() as c:
            c.execute(text("CREATE TABLE probe (x int)"))
            c.execute(text("INSERT INTO probe VALUES (1)"))
        with first.connect() as c:
            assert c.execute(text("SELECT count(*) FROM probe")).scalar_one() == 1
        with other.connect() as c:
            assert c.execute(text("SELECT to_regclass('probe')")).scalar_one() is None
    finally:
        first.dispose()
        other.dispose()


@pytest.mark.parametrize("attempt", [1, 2])
def test_session_writes_are_rolled_back(session: Session, attempt: int) -> None:
    # Runs twice on the same shared database: the second run must not see the first's row.
    session.execute(text("CREATE TABLE IF NOT EXISTS probe_rollback (x int)"))
    session.execute(text("INSERT INTO probe_rollback VALUES (:x)"), {"x": attempt})
    session.commit()  # releases the savepoint only
    rows = session.execute(text("SELECT x FROM probe_rollback")).scalars().all()
    assert rows == [attempt]
