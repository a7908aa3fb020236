"""The child side of :mod:`gen_durable.supervisor`: each child's share of the queues, the
picklable description it is built from, and its main (one Runner, stopped by SIGTERM/SIGINT
or by the supervisor's death)."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection, wait
from typing import Any

import attrs
from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from gen_durable.domain.cron import Cron
from gen_durable.errors import ConfigurationError, DurableError
from gen_durable.runner import SERVICE_CONNECTIONS, Runner
from gen_durable.runtime import config
from gen_durable.runtime.stop_signals import stop_pipe, stop_signals
from gen_durable.store.models import configure_schema
from gen_durable.telemetry.logs import TEXT_FORMAT, configure_logging

log = logging.getLogger("gen_durable.supervisor")

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set in a supervised child, to the supervisor's metrics directory, for prometheus_client
(its multiprocess mode) when ``gen-durable run --processes --metrics-port`` serves metrics."""
LOG_FORMAT = TEXT_FORMAT
"""The log line format of ``gen-durable run`` and of the children it supervises."""


@attrs.frozen
class ChildSettings:
    """How every child sets itself up besides its Runner (``gen-durable run``'s options).

    Args:
        schema: The gen_durable schema (``configure_schema``); None: the default.
        cron: ``MODULE:ATTRIBUTE`` names of Cron schedules (a Cron or an iterable of them),
            given to each child's Runner (the leader among them fires the ticks).
        log_format: ``"text"`` or ``"json"`` (one JSON object per line).
        metrics_dir: A directory where each child writes its Prometheus metrics
            (``prometheus_client``'s multiprocess mode) for the supervisor to serve;
            None: the children keep no metrics.
    """

    schema: str | None = None
    cron: tuple[str, ...] = ()
    log_format: str = "text"
    metrics_dir: str | None = None


@attrs.frozen
class ChildSpec:
    """What a child needs to build its Runner; picklable, since ``spawn`` sends it.

    Args:
        index: The child's slot (0-based): the same after a restart.
        supervisor: The supervisor's id, recorded in the child's ``gd_nodes`` row.
        queues: This child's share of the queues (name -> concurrency).
        dsn: The SQLAlchemy URL the child makes its engine from; or None, with ``app``.
        app: ``"MODULE:OBJECT"``, an Engine or a callable returning one.
        imports: Modules to import first (their FSM and Job classes).
        engine_options: Extra ``create_engine`` arguments for an engine made from ``dsn``.
        runner_options: Keyword arguments of the child's ``Runner``.
        log_level: The level the child logs at; None: it leaves logging as it is.
        settings: Schema, cron schedules, log format and metrics of the child.
    """

    index: int
    supervisor: str
    queues: dict[str, int]
    dsn: str | None
    app: str | None
    imports: tuple[str, ...]
    engine_options: dict[str, Any]
    runner_options: dict[str, Any]
    log_level: int | None
    settings: ChildSettings = ChildSettings()


def split_concurrency(queues: Mapping[str, int], processes: int) -> list[dict[str, int]]:
    """Each process's share of every queue's concurrency, so the shares add up to it.

    A queue of concurrency ``c`` gives every process ``c // processes`` slots; the
    remaining ``c % processes`` slots go one each to the next processes in turn, the turn
    carrying over from one queue to the next, so that the processes' totals differ by at
    most one. A process whose share of a queue is 0 does not serve it. Raises
    ``ConfigurationError`` when there are more processes than slots in all.
    """
    checked = config.check_queues(queues)
    total = sum(checked.values())
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigurationError(f"processes must be an int >= 1, got {processes!r}")
    if processes > total:
        raise ConfigurationError(
            f"{processes} processes but the queues have {total} slot(s) in all: a process "
            "would serve no queue"
        )
    shares: list[dict[str, int]] = [{} for _ in range(processes)]
    turn = 0
    for name, concurrency in checked.items():
        base, extra = divmod(concurrency, processes)
        for index, share in enumerate(shares):
            n = base + (1 if (index - turn) % processes < extra else 0)
            if n:
                share[name] = n
        turn = (turn + extra) % processes
    return shares


def auto_processes(queues: Mapping[str, int]) -> int:
    """``processes="auto"``: one per CPU, but no more than the queues have slots."""
    return max(1, min(os.cpu_count() or 1, sum(config.check_queues(queues).values())))


def load_object(spec: str) -> Any:
    """Import ``MODULE`` (None) or ``MODULE:ATTRIBUTE`` (the attribute).

    Raises ImportError or AttributeError, as importing and ``getattr`` do.
    """
    module_name, _, attribute = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else None


def app_engine(spec: str) -> Engine:
    """The Engine named by ``MODULE:OBJECT`` (``MODULE`` means ``MODULE:engine``): the
    object itself, or what calling it returns. Raises TypeError for anything else."""
    target = load_object(spec if ":" in spec else f"{spec}:engine")
    engine = target() if callable(target) and not isinstance(target, Engine) else target
    if not isinstance(engine, Engine):
        raise TypeError(f"{spec} is not a SQLAlchemy Engine")
    return engine


def runner_engine(url: Any, queues: Mapping[str, int], **options: Any) -> Engine:
    """An engine on ``url`` whose pool holds what a Runner of ``queues`` may use at once."""
    size = sum(queues.values()) + len(queues) + SERVICE_CONNECTIONS
    return create_engine(url, pool_size=size, max_overflow=0, **options)


def probe_engine(spec: ChildSpec) -> Engine:
    """An engine for the supervisor's own few statements: no pooled connection is kept."""
    if spec.app is not None:
        return app_engine(spec.app)
    assert spec.dsn is not None
    connect_args = dict(spec.engine_options.get("connect_args", {}))
    if "connect_timeout" not in make_url(spec.dsn).query:
        connect_args.setdefault("connect_timeout", 10)
    return create_engine(spec.dsn, poolclass=pool.NullPool, connect_args=connect_args)


def unreachable_reason(engine: Engine) -> str | None:
    """Why ``engine`` cannot connect (the driver's first line), or None if it can."""
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"{engine.url.render_as_string(hide_password=True)}: {reason}"
    finally:
        engine.dispose()


def load_schedules(names: Iterable[str]) -> list[Cron]:
    """The Cron schedules named ``MODULE:ATTRIBUTE`` (a Cron, or an iterable of them).

    Raises ImportError or AttributeError as :func:`load_object` does, and TypeError for
    an attribute that holds something else.
    """
    schedules: list[Cron] = []
    for name in names:
        found = load_object(name) if ":" in name else None
        items = list(found) if isinstance(found, Iterable) else [found]
        crons = [item for item in items if isinstance(item, Cron)]
        if not items or len(crons) < len(items):
            raise TypeError(f"{name} is not a Cron schedule nor a list of them (MODULE:ATTRIBUTE)")
        schedules += crons
    return schedules


def build_runner(spec: ChildSpec) -> Runner:
    """Import the modules, make the engine and the child's Runner (not started)."""
    settings = spec.settings
    if settings.schema is not None:
        configure_schema(settings.schema)
    if settings.metrics_dir is not None:
        # Read when prometheus_client is first imported: before the user's modules.
        os.environ[MULTIPROC_ENV] = settings.metrics_dir
        from gen_durable.telemetry import prometheus

        prometheus.instrument()
    for module in spec.imports:
        load_object(module)
    options = dict(spec.runner_options)
    if settings.cron:
        options["cron"] = [*options.get("cron", ()), *load_schedules(settings.cron)]
    if spec.app is not None:
        engine = app_engine(spec.app)
    else:
        engine = runner_engine(spec.dsn, spec.queues, **spec.engine_options)
    return Runner(engine, spec.queues, supervisor=spec.supervisor, **options)


def child_main(spec: ChildSpec, reports: Connection) -> None:
    """A child process: run its Runner until SIGTERM/SIGINT or the supervisor's death.

    It tells the supervisor its node id once started, or ``fatal`` when its configuration
    keeps it from starting (a restart would fail alike). Exit codes: 0 after a graceful
    stop, 1 (fatal or a crash), 3 (the database was unreachable at start).
    """
    # First of all: a stop asked for while the child starts is kept, not lost.
    with stop_pipe() as (wake_r, _):
        _serve(spec, reports, wake_r)


def _serve(spec: ChildSpec, reports: Connection, wake_r: int) -> None:
    if spec.log_level is not None:
        configure_logging(spec.log_level, spec.settings.log_format)
    try:
        runner = build_runner(spec)
        runner.start()
    except (DurableError, ImportError, AttributeError, TypeError) as exc:
        reports.send(("fatal", f"{type(exc).__name__}: {exc}"))
        sys.exit(EXIT_FAILED)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        log.error("worker %d cannot connect to the database: %s", spec.index, reason)
        sys.exit(EXIT_UNREACHABLE)
    log.info("worker %d is runner %s: queues %s", spec.index, runner.node_id, spec.queues)
    parent = multiprocessing.parent_process()
    watched: list[Any] = [wake_r] if parent is None else [wake_r, parent.sentinel]
    try:
        reports.send(("started", runner.node_id))
        while wake_r in wait(watched):
            if stop_signals(os.read(wake_r, 512)):
                log.info(
                    "worker %d (runner %s): signal received, draining", spec.index, runner.node_id
                )
                break
        else:  # the supervisor was killed: nobody would stop or restart this process
            log.warning("worker %d: its supervisor is gone, stopping", spec.index)
    finally:
        runner.stop()
    log.info("worker %d (runner %s) stopped", spec.index, runner.node_id)
