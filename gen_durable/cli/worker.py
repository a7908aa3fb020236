"""``gen-durable run`` (workers, ``--processes N`` under a supervisor), ``gen-durable workers``
(the registered runners) and ``gen-durable dev`` (a local database)."""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs
import click
from sqlalchemy import Engine, create_engine

from gen_durable.cli import DatabaseUnreachable, dsn_option, main, open_engine, sqlalchemy_url
from gen_durable.cli.instances import _emit, _table, json_option
from gen_durable.cli.operator import POSITIVE_SECONDS, SECONDS
from gen_durable.client.fleet import workers as fleet_workers
from gen_durable.domain.cron import Cron
from gen_durable.domain.options import HISTORY_MODES
from gen_durable.endpoints import LIVE_PATH, READY_PATH, Endpoints
from gen_durable.errors import ConfigurationError
from gen_durable.runner import Runner
from gen_durable.runtime.stop_signals import stop_pipe, stop_signals
from gen_durable.store import models
from gen_durable.store.schema import check as check_schema
from gen_durable.supervised import (
    ChildSettings,
    app_engine,
    auto_processes,
    load_object,
    load_schedules,
    runner_engine,
    unreachable_reason,
)
from gen_durable.supervisor import Supervisor
from gen_durable.telemetry.logs import LOG_FORMATS, configure_logging, verbosity


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
    try:
        return load_object(spec)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {spec.partition(':')[0]!r}: {exc}") from exc
    except AttributeError as exc:
        module_name, _, attr = spec.partition(":")
        raise click.BadParameter(f"{module_name!r} has no attribute {attr!r}") from exc


def parse_processes(text: str, queues: dict[str, int]) -> int:
    """``--processes``: an int >= 1, or ``auto`` (one per CPU, at most one per slot)."""
    if text == "auto":
        return auto_processes(queues)
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(
            f"expected N >= 1 or 'auto', got {text!r}", param_hint="--processes"
        )
    if int(text) > sum(queues.values()):
        raise click.BadParameter(
            f"{text} processes but --queues has {sum(queues.values())} slot(s) in all: "
            "a process would serve no queue",
            param_hint="--processes",
        )
    return int(text)


def _reachable(engine: Engine) -> None:
    """Exit 3 (as every command does) when the database cannot be connected to."""
    reason = unreachable_reason(engine)
    if reason is not None:
        raise DatabaseUnreachable(f"cannot connect to {reason}")


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
@click.option("--lease", default=30.0, show_default=True, type=POSITIVE_SECONDS)
@click.option("--poll-interval", default=1.0, show_default=True, type=POSITIVE_SECONDS)
@click.option("--grace", default=30.0, show_default=True, type=SECONDS)
@click.option(
    "--no-listen",
    is_flag=True,
    help="Poll only, for PgBouncer in transaction pooling mode: no LISTEN connection, and "
    "the engine made from --dsn sends no server-side prepared statements.",
)
@click.option(
    "--processes",
    metavar="N|auto",
    default=None,
    help="Run N runner processes under one supervisor ('auto': one per CPU, at most one "
    "per slot of the queues); each serves a share of every queue's concurrency, the shares "
    "adding up to --queues. Without it, one runner runs in this process.",
)
@click.option(
    "--max-restarts",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="With --processes: exit 1 when the processes died more than this many times, "
    "all together, within --restart-window seconds (each dead one is restarted until then).",
)
@click.option(
    "--restart-window",
    default=60.0,
    show_default=True,
    type=POSITIVE_SECONDS,
    help="With --processes: the seconds over which --max-restarts counts deaths.",
)
@click.option(
    "--cron",
    "cron",
    multiple=True,
    metavar="MODULE:ATTR",
    help="Cron schedules to fire: a Cron, or a list of them (repeatable). The runners that "
    "have any elect a leader that fires each tick once.",
)
@click.option(
    "--history",
    type=click.Choice(HISTORY_MODES),
    default="none",
    show_default=True,
    help="Which transitions to record in the history (`show`, `graph`).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port at /metrics (0: any free port, printed); "
    "with --processes the supervisor serves every process's. Needs the prometheus extra.",
)
@click.option(
    "--health-port",
    type=click.IntRange(0, 65535),
    default=None,
    help=f"Serve the health probes on this port (0: any free port, printed): {LIVE_PATH} "
    f"(the loops are alive) and {READY_PATH} (the database answers, heartbeats current).",
)
@click.option(
    "--endpoints-host",
    default="0.0.0.0",
    show_default=True,
    help="The address the metrics and health endpoints listen on.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="'json': one JSON object per line, with the telemetry event's fields.",
)
@click.option(
    "-v", "--verbose", count=True, help="-v: log at INFO (instead of WARNING); -vv: DEBUG."
)
def run(
    dsn: str | None,
    app: str | None,
    imports: tuple[str, ...],
    queues: str,
    lease: float,
    poll_interval: float,
    grace: float,
    no_listen: bool,
    processes: str | None,
    max_restarts: int,
    restart_window: float,
    cron: tuple[str, ...],
    history: str,
    metrics_port: int | None,
    health_port: int | None,
    endpoints_host: str,
    log_format: str,
    verbose: int,
) -> None:
    """Run a worker until SIGTERM or SIGINT (graceful: in-flight steps get --grace).

    With --processes, a supervisor runs that many worker processes, forwards SIGTERM and
    SIGINT to them, and restarts one that dies. Exit codes: 0 stopped as asked, 1 failed
    (with --processes: the processes kept dying), 3 the database is unreachable.
    """
    level = verbosity(verbose)
    configure_logging(level, log_format)
    wanted = parse_queues(queues)
    if os.getcwd() not in sys.path:  # like `python -m`: the project's modules are importable
        sys.path.insert(0, os.getcwd())
    if metrics_port is not None:
        _needs_prometheus()
    for module in imports:
        _load(module)
    schedules = _schedules(cron)
    if app:
        engine = _app_engine(app)
        url = None
    elif dsn:
        url = sqlalchemy_url(dsn)
    else:
        raise click.UsageError("no database: pass --dsn, --app or set GEN_DURABLE_DSN")
    # A server-side prepared statement outlives the transaction that made it, and
    # PgBouncer hands the next transaction to whichever server connection is free.
    engine_options = {"connect_args": {"prepare_threshold": None}} if no_listen else {}
    options: dict[str, Any] = {"lease": lease, "poll_interval": poll_interval, "grace": grace}
    options.update(listen=not no_listen, history=history)
    served = Endpoints(metrics_port, health_port, endpoints_host, lease, _say)
    if processes is not None:
        metrics_dir = served.multiprocess_dir() if metrics_port is not None else None
        settings = ChildSettings(models.schema_name(), cron, log_format, metrics_dir)
        supervisor = Supervisor(
            wanted,
            processes=parse_processes(processes, wanted),
            dsn=None if url is None else url.render_as_string(hide_password=False),
            app=app,
            imports=imports,
            engine_options=engine_options,
            runner_options=options,
            max_restarts=max_restarts,
            restart_window=restart_window,
            log_level=level,
            settings=settings,
        )
        shares = supervisor.shares
        click.echo(f"supervisor {supervisor.id}: {len(shares)} processes {shares}", err=True)
        with served.supervising(supervisor, url or engine.url):
            code = supervisor.run()  # it reports why it failed, if it did
        sys.exit(code)
    if url is not None:
        engine = runner_engine(url, wanted, **engine_options)
    _reachable(engine)
    check_schema(engine)  # before the Runner: a missing schema is one line, not its cleanup's
    try:
        runner = Runner(engine, wanted, cron=schedules, **options)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"worker {runner.node_id}: queues {wanted}", err=True)
    _run_until_signal(runner, served, url or engine.url)


def _run_until_signal(runner: Runner, served: Endpoints, url: Any) -> None:
    """Start ``runner``, serve its endpoints, stop it at SIGTERM/SIGINT."""
    with stop_pipe() as (wake_r, _):
        runner.start()
        try:
            with served.running(runner.node_id, url):
                while not stop_signals(os.read(wake_r, 512)):
                    pass
        finally:
            runner.stop()


def _say(message: str) -> None:
    click.echo(message, err=True)


def _needs_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise click.UsageError(
            "--metrics-port needs prometheus_client: pip install 'gen_durable[prometheus]'"
        ) from None


def _schedules(names: tuple[str, ...]) -> list[Cron]:
    try:
        return load_schedules(names)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"{exc}", param_hint="--cron") from exc
    except TypeError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron") from exc


def _app_engine(app: str) -> Engine:
    try:
        return app_engine(app)
    except TypeError as exc:
        raise click.BadParameter(str(exc), param_hint="--app") from exc
    except (ImportError, AttributeError):
        _load(app if ":" in app else f"{app}:engine")  # raises the usage error naming it
        raise


@main.command()
@dsn_option
@json_option
def workers(dsn: str | None, as_json: bool) -> None:
    """The runners registered in the database: host, pid, queues with their concurrency,
    the instances whose lease each holds, its last heartbeat (against its own interval),
    the leader, and the supervisor that started each (``run --processes``; empty for a
    runner on its own). A runner silent for 3 of its heartbeat intervals is STALE."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        found = [attrs.asdict(w) for w in fleet_workers(conn)]
    if as_json:
        _emit(found)
        return
    for w in found:
        w["queues"] = ",".join(f"{q}={n}" for q, n in sorted(w["queues"].items()))
        every = f" (every {w['heartbeat_interval']:g}s)" if w["heartbeat_interval"] else ""
        w["heartbeat"] = f"{w['silent_for']:.0f}s ago{every}"
        w["state"] = " ".join(s for s in ("STALE" * w["stale"], "leader" * w["leader"]) if s)
    _table(
        found, ["id", "supervisor", "hostname", "pid", "queues", "running", "heartbeat", "state"]
    )


@main.command()
def dev() -> None:
    """Start a throwaway embedded PostgreSQL, print its DSN, keep it until Ctrl-C or
    SIGTERM (either stops the server and deletes its data folder)."""
    from gen_durable.devserver import embedded
    from gen_durable.store.schema import install

    # From the start: a signal while the server starts is kept, and stops it once up.
    with stop_pipe() as (wake_r, _), embedded() as url:
        engine = create_engine(url)
        install(engine)
        engine.dispose()
        click.echo(f"GEN_DURABLE_DSN={url}")
        click.echo("schema installed; press Ctrl-C to stop and delete this database", err=True)
        while not stop_signals(os.read(wake_r, 512)):
            pass
        click.echo("stopping the server and deleting its data", err=True)
