"""The ``gen-durable`` command line (also ``python -m gen_durable``).

Exit codes: 0 success, 1 the command failed, 2 usage error, 3 database unreachable.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click
from alembic import command
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError

from gen_durable.cli.operator import interactive, progress
from gen_durable.errors import ConfigurationError, DurableError, ValidationError
from gen_durable.store import migration, models
from gen_durable.store.migrations import validate_schema
from gen_durable.store.schema import check as check_schema

EXIT_UNREACHABLE = 3

_PLAIN_DRIVERS = {"postgres", "postgresql"}
# undefined_table, undefined_column, invalid_schema_name: the schema is missing or behind.
_SCHEMA_SQLSTATES = {"42P01", "42703", "3F000"}


class DatabaseUnreachable(click.ClickException):
    """The database could not be connected to (exit code 3)."""

    exit_code = EXIT_UNREACHABLE


def sqlalchemy_url(dsn: str) -> URL:
    """Parse a DSN, pointing plain ``postgresql://`` (or ``postgres://``) at psycopg 3."""
    try:
        url = make_url(dsn)
    except ArgumentError as e:
        raise click.BadParameter(
            "expected a URL like postgresql://user:password@host:5432/dbname", param_hint="--dsn"
        ) from e
    if url.drivername in _PLAIN_DRIVERS:
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() != "postgresql":
        raise click.BadParameter("gen_durable needs a PostgreSQL database", param_hint="--dsn")
    return url


@contextlib.contextmanager
def open_engine(dsn: str | None) -> Iterator[Engine]:
    """An engine for ``dsn`` whose connectivity has been checked (else exit code 3)."""
    if not dsn:
        raise click.UsageError("no database: pass --dsn or set GEN_DURABLE_DSN")
    url = sqlalchemy_url(dsn)
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": 10}
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        try:
            with engine.connect():
                pass
        except OperationalError as e:
            reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
            where = url.render_as_string(hide_password=True)
            raise DatabaseUnreachable(f"cannot connect to {where}: {reason}") from None
        try:
            yield engine
        except ProgrammingError as e:
            if getattr(e.orig, "sqlstate", None) in _SCHEMA_SQLSTATES:
                check_schema(engine)  # ConfigurationError when the schema is missing or behind
            raise
    finally:
        engine.dispose()


dsn_option = click.option(
    "--dsn",
    envvar="GEN_DURABLE_DSN",
    show_envvar=True,
    help="Database URL, e.g. postgresql://user:password@host/dbname.",
)
SCHEMA_HELP = f"Schema of the gen_durable tables [default: {models.SCHEMA_TOKEN}]."
schema_option = click.option(
    "--schema", default=None, envvar="GEN_DURABLE_SCHEMA", show_envvar=True, help=SCHEMA_HELP
)


def _configure_schema(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    try:
        models.configure_schema(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


def _global_schema() -> click.Option:
    """``--schema`` (env ``GEN_DURABLE_SCHEMA``), taken before or after the command's name."""
    return click.Option(
        ["--schema"],
        envvar="GEN_DURABLE_SCHEMA",
        show_envvar=True,
        expose_value=False,
        is_eager=True,
        callback=_configure_schema,
        help=SCHEMA_HELP,
    )


class _Commands(click.Group):
    """The ``gen-durable`` group: the library's errors end a command with one line, exit 1.

    Every command takes ``--schema`` (the group's option, also accepted after the
    command's name); a command with an option of its own of that name keeps it.
    """

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "schema" for p in cmd.params):
            cmd.params.append(_global_schema())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:  # e.g. the schema is missing: the message says why
            raise click.ClickException(str(exc)) from exc
        except DurableError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@click.group(cls=_Commands, params=[_global_schema()])
@click.version_option(package_name="gen_durable")
def main() -> None:
    """gen_durable: durable state machines and jobs on PostgreSQL."""


@main.command()
@dsn_option
@schema_option
@click.option(
    "--revision",
    default="heads",
    show_default=True,
    help="Revision to upgrade to.",
)
@click.option(
    "--downgrade",
    "downgrade_to",
    metavar="REV",
    default=None,
    help="Downgrade to REV instead of upgrading ('base' drops the tables).",
)
@click.option(
    "--sql",
    is_flag=True,
    help="Print the SQL instead of running it (no database needed; a downgrade needs "
    "a FROM:TO range).",
)
def migrate(
    dsn: str | None,
    schema: str | None,
    revision: str,
    downgrade_to: str | None,
    sql: bool,
) -> None:
    """Create or upgrade (or downgrade) the gen_durable tables."""
    try:
        name = validate_schema(schema or models.schema_name())
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--schema") from e
    if downgrade_to is not None and revision != "heads":
        raise click.UsageError("--revision and --downgrade exclude each other")
    try:
        if sql:
            _print_sql(name, revision, downgrade_to)
            return
        if not dsn:
            raise click.UsageError("no database: pass --dsn or set GEN_DURABLE_DSN")
        with open_engine(dsn) as engine:
            before = migration.current(engine, schema)
            down = downgrade_to is not None
            planned = [] if down else migration.plan(before, revision)
            total = (
                migration.steps(before, downgrade_to or revision, downgrade=down)
                if interactive()
                else None
            )
            with progress(total, "migrating", shown=total is not None) as advance:
                step = None if total is None else lambda _rev: advance(1)
                if downgrade_to is not None:
                    migration.downgrade_bind(engine, downgrade_to, schema, on_step=step)
                else:
                    migration.upgrade_bind(engine, revision, schema, on_step=step)
            after = migration.current(engine, schema)
    except CommandError as e:
        # Alembic's own complaints are about the revision argument.
        raise click.UsageError(str(e)) from e
    except DBAPIError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise click.ClickException(f"migration failed: {reason}") from e
    click.echo(f"gen_durable schema {name!r}: {before or 'empty'} -> {after or 'empty'}")
    for rev, phase, summary in planned:  # expand: older runners keep working; contract: not
        click.echo(f"  {rev} ({phase}): {summary}")


def _print_sql(schema: str, revision: str, downgrade_to: str | None) -> None:
    # Offline, only the dialect matters: no DSN is needed or connected to.
    cfg = migration.config(schema)
    cfg.output_buffer = sys.stdout
    if downgrade_to is not None:
        command.downgrade(cfg, downgrade_to, sql=True)
    else:
        command.upgrade(cfg, revision, sql=True)


# The other commands register themselves on ``main`` when imported.
from gen_durable.cli import actions, history, instances, upgrades, web, why, worker  # noqa: E402

__all__ = ["actions", "history", "instances", "main", "upgrades", "web", "why", "worker"]
