"""The packaged alembic revisions, the migration helpers, schema checks and the CLI.

Each test makes its own empty databases on the session's server (``server_url``).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateSchema

from gen_durable.cli import main
from gen_durable.errors import ConfigurationError
from gen_durable.store import migration, models, schema
from gen_durable.store.migrations import VERSION_TABLE

DEFAULT = models.SCHEMA_TOKEN
TABLES = {table.name for table in models.metadata.sorted_tables}

# --- helpers -----------------------------------------------------------------------------


@pytest.fixture
def new_db(server_url: str) -> Iterator[Callable[[], str]]:
    """Call it for the URL of a new, empty database (all dropped after the test)."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    names: list[str] = []

    def make() -> str:
        names.append(f"gd_migtest_{os.getpid()}_{uuid.uuid4().hex[:10]}")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{names[-1]}"'))
        return make_url(server_url).set(database=names[-1]).render_as_string(hide_password=False)

    yield make
    with admin.connect() as c:
        for name in names:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def empty_url(new_db: Callable[[], str]) -> str:
    """An empty database of this test's own."""
    return new_db()


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    """An engine on ``empty_url``."""
    eng = create_engine(empty_url, poolclass=NullPool)
    yield eng
    eng.dispose()


def metadata_for(name: str) -> MetaData:
    """The models placed in schema ``name``.

    Autogenerate's comparison ignores ``schema_translate_map`` (it lists the schemas the
    metadata names), so a non-default schema needs a copy of the tables.
    """
    if name == DEFAULT:
        return models.metadata
    copy = MetaData(schema=name, naming_convention=models.NAMING)
    for table in models.metadata.sorted_tables:
        table.to_metadata(copy, schema=name)
    return copy


def diff_against_models(eng: Engine, name: str) -> list[Any]:
    """Autogenerate's diff between the database's ``name`` schema and the models."""
    with eng.connect() as conn:
        conn = conn.execution_options(schema_translate_map=models.translate_map(name))
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": lambda n, kind, _parents: n == name if kind == "schema" else True,
                "compare_type": True,
                "compare_server_default": True,
                "version_table": VERSION_TABLE,
                "version_table_schema": name,
            },
        )
        return list(compare_metadata(ctx, metadata_for(name)))


def catalog(eng: Engine, name: str) -> dict[str, list[tuple[Any, ...]]]:
    """What PostgreSQL says the gd_ tables of ``name`` are, minus the version table."""
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,
                   is_identity, identity_generation, identity_start, identity_increment
            FROM information_schema.columns
            WHERE table_schema = :s AND table_name <> :v""",
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes
            WHERE schemaname = :s AND tablename <> :v""",
        "constraints": """
            SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = :s AND t.relname <> :v""",
        "sequences": """
            SELECT sequencename, data_type, start_value, increment_by FROM pg_sequences
            WHERE schemaname = :s""",
    }
    with eng.connect() as conn:
        return {
            key: sorted(
                tuple(row) for row in conn.execute(text(sql), {"s": name, "v": VERSION_TABLE})
            )
            for key, sql in queries.items()
        }


def tables_in(eng: Engine, name: str) -> set[str]:
    """Names of the tables in schema ``name``."""
    with eng.connect() as conn:
        rows = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": name}
        )
        return set(rows.scalars())


def schemas(eng: Engine) -> set[str]:
    """Names of the schemas in the database."""
    with eng.connect() as conn:
        return set(conn.execute(text("SELECT nspname FROM pg_namespace")).scalars())


def relations_outside(eng: Engine, name: str) -> list[tuple[Any, ...]]:
    """Every relation and constraint outside schema ``name`` (to prove it was untouched)."""
    with eng.connect() as conn:
        rels = conn.execute(
            text(
                "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname <> :s "
                # The toast tables of new tables appear there, whatever their schema.
                "AND n.nspname NOT IN ('pg_toast', 'pg_catalog', 'information_schema')"
            ),
            {"s": name},
        )
        cons = conn.execute(
            text(
                "SELECT n.nspname, c.conname FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname <> :s "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            ),
            {"s": name},
        )
        return sorted(tuple(r) for r in [*rels, *cons])


def versions(eng: Engine, table: str) -> list[str]:
    """Rows of an alembic version table (``schema.table``)."""
    name, tname = table.split(".")
    with eng.connect() as conn:
        found = conn.execute(text("SELECT to_regclass(:t)"), {"t": table}).scalar_one()
        if found is None:
            return []
        q = text(f'SELECT version_num FROM "{name}"."{tname}"')
        return list(conn.execute(q).scalars())


# --- (a) a fresh migration equals the models -----------------------------------------------


def test_fresh_migration_matches_the_models(new_db: Callable[[], str]) -> None:
    migrated = create_engine(new_db(), poolclass=NullPool)
    created = create_engine(new_db(), poolclass=NullPool)
    try:
        schema.install(migrated)
        assert migration.current(migrated) == migration.head()
        assert diff_against_models(migrated, DEFAULT) == []

        with created.begin() as conn:
            conn.execute(CreateSchema(DEFAULT))
            models.metadata.create_all(
                conn.execution_options(schema_translate_map=models.translate_map(DEFAULT))
            )
        want, got = catalog(created, DEFAULT), catalog(migrated, DEFAULT)
        assert got["indexes"] == want["indexes"]  # exact partial-index predicates
        assert got == want
        assert {row[1] for row in got["indexes"]} >= {
            "ix_gd_instances_pick",
            "ix_gd_signals_pending",
        }
    finally:
        migrated.dispose()
        created.dispose()


def test_version_table_lives_in_the_schema(empty_engine: Engine) -> None:
    schema.install(empty_engine)
    assert versions(empty_engine, f"{DEFAULT}.{VERSION_TABLE}") == [migration.head()]
    assert tables_in(empty_engine, "public") == set()  # no alembic_version of ours there
    assert tables_in(empty_engine, DEFAULT) == TABLES | {VERSION_TABLE}


# --- (b) round trip ----------------------------------------------------------------------


def test_upgrade_downgrade_upgrade_round_trips(empty_engine: Engine) -> None:
    migration.upgrade_bind(empty_engine)
    migration.upgrade_bind(empty_engine)  # idempotent
    assert tables_in(empty_engine, DEFAULT) == TABLES | {VERSION_TABLE}

    migration.downgrade_bind(empty_engine, "base")
    assert tables_in(empty_engine, DEFAULT) == {VERSION_TABLE}
    assert migration.current(empty_engine) is None
    assert DEFAULT in schemas(empty_engine)  # kept: it holds the version table

    migration.upgrade_bind(empty_engine, migration.head())
    assert tables_in(empty_engine, DEFAULT) == TABLES | {VERSION_TABLE}
    assert migration.current(empty_engine) == migration.head()
    assert diff_against_models(empty_engine, DEFAULT) == []


def test_upgrade_on_a_connection_joins_its_transaction(empty_engine: Engine) -> None:
    with empty_engine.connect() as conn:
        trans = conn.begin()
        migration.upgrade_bind(conn)
        assert migration.current(conn) == migration.head()
        trans.rollback()
    assert migration.current(empty_engine) is None
    assert DEFAULT not in schemas(empty_engine)

    with empty_engine.connect() as conn:  # not in a transaction: we open and commit one
        migration.upgrade_bind(conn)
        assert not conn.in_transaction()
    assert migration.current(empty_engine) == migration.head()


def test_concurrent_installs_from_threads_serialise(empty_engine: Engine) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def install() -> None:
        try:
            barrier.wait()
            schema.install(empty_engine)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert versions(empty_engine, f"{DEFAULT}.{VERSION_TABLE}") == [migration.head()]


INSTALL_SCRIPT = """
import sys
from sqlalchemy import create_engine
from gen_durable.store import schema
schema.install(create_engine(sys.argv[1]))
"""


def test_concurrent_installs_from_several_processes(empty_url: str, empty_engine: Engine) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INSTALL_SCRIPT, empty_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert versions(empty_engine, f"{DEFAULT}.{VERSION_TABLE}") == [migration.head()]


# --- (c) a non-default schema ------------------------------------------------------------


def test_migrate_into_a_custom_schema_touches_nothing_else(empty_engine: Engine) -> None:
    with empty_engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.orders (id int PRIMARY KEY)"))
        conn.execute(text("CREATE SCHEMA other"))
        conn.execute(text("CREATE TABLE other.things (id int)"))
    before = relations_outside(empty_engine, "gd_custom")

    schema.install(empty_engine, "gd_custom")
    assert tables_in(empty_engine, "gd_custom") == TABLES | {VERSION_TABLE}
    assert relations_outside(empty_engine, "gd_custom") == before
    assert DEFAULT not in schemas(empty_engine)
    assert diff_against_models(empty_engine, "gd_custom") == []

    schema.check(empty_engine, "gd_custom")
    with pytest.raises(ConfigurationError, match="not installed"):
        schema.check(empty_engine)

    # The store's way in: the models through the translate map.
    with empty_engine.begin() as conn:
        conn = conn.execution_options(schema_translate_map=models.translate_map("gd_custom"))
        conn.execute(
            insert(models.instances).values(
                fsm="f", queue="q", status="available", step="s", max_attempts=1
            )
        )
        assert conn.execute(select(models.instances.c.status)).scalar_one() == "available"

    migration.downgrade_bind(empty_engine, "base", "gd_custom")
    assert tables_in(empty_engine, "gd_custom") == {VERSION_TABLE}
    assert relations_outside(empty_engine, "gd_custom") == before


def test_schemas_are_independent(empty_engine: Engine) -> None:
    schema.install(empty_engine, "gd_a")
    schema.install(empty_engine, "gd_b")
    migration.downgrade_bind(empty_engine, "base", "gd_a")
    assert migration.current(empty_engine, "gd_a") is None
    assert migration.current(empty_engine, "gd_b") == migration.head()


# --- schema.check ------------------------------------------------------------------------


def test_check(
    empty_engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError, match="not installed"):
        schema.check(empty_engine)
    assert schema.needs_upgrade(empty_engine)

    schema.install(empty_engine)
    schema.check(empty_engine)
    assert not schema.needs_upgrade(empty_engine)

    # A database written by a newer library (unknown revision) is accepted, and logged.
    with empty_engine.begin() as conn:
        conn.execute(text(f'UPDATE "{DEFAULT}"."{VERSION_TABLE}" SET version_num = \'9999\''))
    with caplog.at_level(logging.WARNING, logger="gen_durable.schema"):
        schema.check(empty_engine)
    assert "unknown to this library" in caplog.text
    assert not schema.needs_upgrade(empty_engine)

    # A database behind this library's head is refused.
    with empty_engine.begin() as conn:
        conn.execute(text(f'UPDATE "{DEFAULT}"."{VERSION_TABLE}" SET version_num = \'0001\''))
    monkeypatch.setattr(migration, "head", lambda: "0002")
    with pytest.raises(ConfigurationError, match="at revision 0001, this library needs 0002"):
        schema.check(empty_engine)
    assert schema.needs_upgrade(empty_engine)


# --- (d) from inside a user's own alembic revision -----------------------------------------

USER_ENV = """
from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
"""

USER_REVISION = """
import sqlalchemy as sa
from alembic import op

import gen_durable.migration

revision = "u1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    gen_durable.migration.upgrade({args})
    # After the nested run the user's own `op` must still work.
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "instance_id",
            sa.BigInteger,
            sa.ForeignKey("{schema}.gd_instances.id", ondelete="SET NULL"),
        ),
    )
    {after}


def downgrade():
    op.drop_table("orders")
    gen_durable.migration.downgrade({args})
"""


def user_config(
    tmp_path: Path, url: str, *, args: str = "", after: str = "", name: str = DEFAULT
) -> Config:
    """A throwaway application alembic environment whose one revision calls ours."""
    root = tmp_path / "user_migrations"
    (root / "versions").mkdir(parents=True)
    (root / "env.py").write_text(USER_ENV)
    (root / "versions" / "u1_init.py").write_text(
        textwrap.dedent(USER_REVISION).format(args=args, after=after or "pass", schema=name)
    )
    cfg = Config()
    cfg.set_main_option("script_location", str(root))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def test_upgrade_from_a_user_revision(tmp_path: Path, empty_url: str, empty_engine: Engine) -> None:
    cfg = user_config(tmp_path, empty_url)
    command.upgrade(cfg, "head")

    assert versions(empty_engine, "public.alembic_version") == ["u1"]
    assert versions(empty_engine, f"{DEFAULT}.{VERSION_TABLE}") == [migration.head()]
    assert tables_in(empty_engine, DEFAULT) == TABLES | {VERSION_TABLE}
    assert tables_in(empty_engine, "public") == {"alembic_version", "orders"}

    command.downgrade(cfg, "base")
    assert versions(empty_engine, "public.alembic_version") == []
    assert tables_in(empty_engine, "public") == {"alembic_version"}
    assert tables_in(empty_engine, DEFAULT) == {VERSION_TABLE}
    assert migration.current(empty_engine) is None


def test_user_revision_with_a_custom_schema(
    tmp_path: Path, empty_url: str, empty_engine: Engine
) -> None:
    cfg = user_config(tmp_path, empty_url, args='schema="gd_app"', name="gd_app")
    command.upgrade(cfg, "head")
    assert migration.current(empty_engine, "gd_app") == migration.head()
    assert DEFAULT not in schemas(empty_engine)


def test_failing_user_revision_rolls_ours_back(
    tmp_path: Path, empty_url: str, empty_engine: Engine
) -> None:
    cfg = user_config(tmp_path, empty_url, after='raise RuntimeError("boom")')
    with pytest.raises(RuntimeError, match="boom"):
        command.upgrade(cfg, "head")
    # One transaction: the library's tables, schema and version went with the user's.
    assert DEFAULT not in schemas(empty_engine)
    assert versions(empty_engine, "public.alembic_version") == []


def test_user_revision_offline_writes_one_script(tmp_path: Path, empty_url: str) -> None:
    cfg = user_config(tmp_path, empty_url)
    cfg.output_buffer = io.StringIO()
    command.upgrade(cfg, "head", sql=True)
    script = cfg.output_buffer.getvalue()
    assert f"CREATE TABLE {DEFAULT}.gd_instances" in script
    assert f"INSERT INTO {DEFAULT}.{VERSION_TABLE}" in script
    assert "INSERT INTO alembic_version" in script
    assert script.index(f"CREATE SCHEMA IF NOT EXISTS {DEFAULT}") < script.index(
        f"CREATE TABLE {DEFAULT}.{VERSION_TABLE}"
    )
    # Ours is nested in the user's transaction: no BEGIN/COMMIT of its own.
    assert script.count("BEGIN;") == 1
    assert script.count("COMMIT;") == 1


def test_nested_upgrade_outside_a_revision_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="inside an alembic revision"):
        migration.upgrade()


# --- (e) the command line ----------------------------------------------------------------


def plain(url: str) -> str:
    """``url`` as a plain libpq-style ``postgresql://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def test_cli_migrate(empty_url: str, empty_engine: Engine) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["migrate", "--dsn", plain(empty_url)])
    assert result.exit_code == 0, result.output
    assert f"empty -> {migration.head()}" in result.output
    assert tables_in(empty_engine, DEFAULT) == TABLES | {VERSION_TABLE}

    result = runner.invoke(main, ["migrate"], env={"GEN_DURABLE_DSN": plain(empty_url)})
    assert result.exit_code == 0, result.output
    assert f"{migration.head()} -> {migration.head()}" in result.output

    result = runner.invoke(main, ["migrate", "--dsn", empty_url, "--downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert tables_in(empty_engine, DEFAULT) == {VERSION_TABLE}


def test_cli_custom_schema(empty_url: str, empty_engine: Engine) -> None:
    result = CliRunner().invoke(main, ["migrate", "--dsn", empty_url, "--schema", "gd_cli"])
    assert result.exit_code == 0, result.output
    assert migration.current(empty_engine, "gd_cli") == migration.head()
    assert DEFAULT not in schemas(empty_engine)


def test_cli_unreachable_database_exits_3() -> None:
    result = CliRunner().invoke(
        main, ["migrate", "--dsn", "postgresql://u:secret@127.0.0.1:1/nope"]
    )
    assert result.exit_code == 3
    assert "cannot connect to postgresql+psycopg://u:***@127.0.0.1:1/nope" in result.output
    assert "secret" not in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["migrate", "--dsn", "not a url"],
        ["migrate", "--dsn", "mysql://u@h/d"],
        ["migrate", "--dsn", "postgresql://u@h/d", "--schema", "x" * 64],
        ["migrate", "--dsn", "postgresql://u@h/d", "--revision", "0001", "--downgrade", "base"],
        ["migrate", "--sql", "--revision", "nosuchrevision"],
        ["nosuchcommand"],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(main, args, env={"GEN_DURABLE_DSN": None})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_cli_unknown_revision_exits_2(empty_url: str) -> None:
    result = CliRunner().invoke(main, ["migrate", "--dsn", empty_url, "--revision", "9999"])
    assert result.exit_code == 2, result.output


def test_cli_prints_sql_without_a_database() -> None:
    result = CliRunner().invoke(main, ["migrate", "--sql", "--schema", "gd_print"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE gd_print.gd_instances" in result.output
    assert "CREATE SCHEMA IF NOT EXISTS gd_print" in result.output
    assert DEFAULT + "." not in result.output


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gen_durable", "migrate", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--dsn" in out.stdout
    assert "Usage: gen-durable migrate" in out.stdout
