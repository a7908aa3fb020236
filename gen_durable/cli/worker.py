"""``gen-durable run`` (a worker process) and ``gen-durable dev`` (a local database)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import Any

import click
from sqlalchemy import Engine, create_engine

from gen_durable.cli import dsn_option, main, sqlalchemy_url
from gen_durable.runner import SERVICE_CONNECTIONS, Runner


def parse_queues(text: str) -> dict[str, int]:
    """``default=10,checkout=5`` -> ``{"default": 10, "checkout": 5}``."""
    queues: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, count = part.partition("=")
        if not sep or not name or not count.isdigit() or int(count) < 1:
            raise click.BadParameter(f"{part!r}: expected NAME=CONCURRENCY", param_hint="--queues")
        queues[name.strip()] = int(count)
    if not queues:
        raise click.BadParameter("name at least one queue", param_hint="--queues")
    return queues


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    if not attr:
        return None
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}") from exc


@main.command()
@dsn_option
@click.option(
    "--app",
    "app",
    metavar="MODULE:OBJECT",
    help="An Engine (or a callable returning one) to run on; its module defines the classes.",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE so that its FSM and Job classes are known (repeatable).",
)
@click.option("--queues", default="default=10", show_default=True, help="NAME=CONCURRENCY,...")
@click.option("--lease", default=30.0, show_default=True, type=float)
@click.option("--poll-interval", default=1.0, show_default=True, type=float)
@click.option("--grace", default=30.0, show_default=True, type=float)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Poll only, for PgBouncer in transaction pooling mode: no LISTEN connection, and "
    "the engine made from --dsn sends no server-side prepared statements.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO instead of WARNING.")
def run(
    dsn: str | None,
    app: str | None,
    imports: tuple[str, ...],
    queues: str,
    lease: float,
    poll_interval: float,
    grace: float,
    no_listen: bool,
    verbose: bool,
) -> None:
    """Run a worker until SIGTERM or SIGINT (graceful: in-flight steps get --grace)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    wanted = parse_queues(queues)
    if os.getcwd() not in sys.path:  # like `python -m`: the project's modules are importable
        sys.path.insert(0, os.getcwd())
    for module in imports:
        _load(module)
    engine: Engine | None = None
    if app:
        target = _load(app if ":" in app else f"{app}:engine")
        engine = target() if callable(target) and not isinstance(target, Engine) else target
        if not isinstance(engine, Engine):
            raise click.BadParameter(f"{app} is not a SQLAlchemy Engine", param_hint="--app")
    elif dsn:
        size = sum(wanted.values()) + len(wanted) + SERVICE_CONNECTIONS
        # A server-side prepared statement outlives the transaction that made it, and
        # PgBouncer hands the next transaction to whichever server connection is free.
        connect_args = {"prepare_threshold": None} if no_listen else {}
        engine = create_engine(
            sqlalchemy_url(dsn), pool_size=size, max_overflow=0, connect_args=connect_args
        )
    else:
        raise click.UsageError("no database: pass --dsn, --app or set GEN_DURABLE_DSN")
    runner = Runner(
        engine,
        wanted,
        lease=lease,
        poll_interval=poll_interval,
        grace=grace,
        listen=not no_listen,
    )
    click.echo(f"worker {runner.node_id}: queues {wanted}", err=True)
    runner.run_forever()


@main.command()
def dev() -> None:
    """Start a throwaway embedded PostgreSQL, print its DSN, keep it until Ctrl-C."""
    from gen_durable.devserver import embedded
    from gen_durable.store.schema import install

    with embedded() as url:
        engine = create_engine(url)
        install(engine)
        engine.dispose()
        click.echo(f"GEN_DURABLE_DSN={url}")
        click.echo("schema installed; press Ctrl-C to stop and delete this database", err=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
