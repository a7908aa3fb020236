"""The HTTP endpoints of ``gen-durable run``: health probes and Prometheus metrics.

``--health-port`` serves :data:`LIVE_PATH` (the process's loops are alive) and
:data:`READY_PATH` (the database answers and every runner's heartbeat is current), 200
when true and 503 when not, with a JSON body saying why. ``--metrics-port`` serves
``/metrics``: the step metrics of :mod:`gen_durable.telemetry.prometheus` and the
queue-depth gauges of :class:`DepthCollector`. With ``--processes N`` the supervisor serves
both for all its children: the children write their metrics to a shared directory
(``prometheus_client``'s multiprocess mode) and only the supervisor counts the queues.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Engine, create_engine, pool
from sqlalchemy.exc import DBAPIError

from gen_durable import store
from gen_durable.errors import ConfigurationError

log = logging.getLogger("gen_durable.endpoints")

LIVE_PATH = "/livez"
READY_PATH = "/readyz"
PROBE_TIMEOUT = 5
"""Seconds a probe's database statement may take (connect and run)."""


class Probe(Protocol):
    """What the health endpoint asks: each answer is (healthy, why)."""

    def live(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...


def probe_engine(url: Any) -> Engine:
    """An engine for the probes' own statements: no pooled connection, short timeouts."""
    return create_engine(
        url,
        poolclass=pool.NullPool,
        connect_args={
            "connect_timeout": PROBE_TIMEOUT,
            "options": f"-c statement_timeout={PROBE_TIMEOUT * 1000}",
        },
    )


def not_ready(
    engine: Engine,
    lease: float,
    *,
    node_id: str | None = None,
    supervisor: str | None = None,
    expected: int = 1,
) -> str | None:
    """Why the runner ``node_id`` (or the ``expected`` runners of ``supervisor``) is not
    ready, or None when it is: the database answers, the runners' rows are there and each
    heartbeat is younger than ``lease`` (after that, the reaper may take its leases back)."""
    try:
        with engine.connect() as conn:
            nodes = store.maintenance.list_nodes(conn, None)
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        return f"the database does not answer: {type(exc.orig or exc).__name__}: {reason}"
    if supervisor is None:
        nodes = [n for n in nodes if n.id == node_id]
    else:
        nodes = [n for n in nodes if n.supervisor == supervisor]
    if len(nodes) < expected:
        return f"{len(nodes)} of {expected} runner(s) registered"
    for node in nodes:
        if node.silent_for >= lease:
            return f"runner {node.id}: last heartbeat {node.silent_for:.0f}s ago (lease {lease:g}s)"
    return None


class RunnerProbe:
    """The probes of one Runner in this process.

    Live: the runner's threads (dispatchers, committer, workers, services), as they were
    right after it started, are all still running. Ready: the database answers and the
    runner's heartbeat row is current.
    """

    def __init__(self, node_id: str, lease: float, engine: Engine) -> None:
        self._node_id = node_id
        self._lease = lease
        self._engine = engine
        # Made once the runner started: its threads, all named gd-*, are running then.
        self._threads = [t for t in threading.enumerate() if t.name.startswith("gd-")]

    def live(self) -> tuple[bool, str]:
        dead = sorted(t.name for t in self._threads if not t.is_alive())
        return (not dead, f"threads stopped: {', '.join(dead)}" if dead else "alive")

    def ready(self) -> tuple[bool, str]:
        why = not_ready(self._engine, self._lease, node_id=self._node_id)
        return (why is None, why or "ready")


class Supervised(Protocol):
    """What :class:`SupervisorProbe` asks of a supervisor."""

    @property
    def id(self) -> str: ...

    def slots_alive(self) -> list[bool]: ...


class SupervisorProbe:
    """The probes of a supervisor's children (``gen-durable run --processes N``).

    Live: every child's process runs (or its restart is scheduled). Ready: the database
    answers, every child has started its runner, and each one's heartbeat is current.
    """

    def __init__(self, supervisor: Supervised, lease: float, engine: Engine) -> None:
        self._supervisor = supervisor
        self._lease = lease
        self._engine = engine

    def live(self) -> tuple[bool, str]:
        alive = self._supervisor.slots_alive()
        dead = [str(index) for index, ok in enumerate(alive) if not ok]
        return (not dead, f"workers not running: {', '.join(dead)}" if dead else "alive")

    def ready(self) -> tuple[bool, str]:
        expected = len(self._supervisor.slots_alive())
        supervisor = self._supervisor.id
        why = not_ready(self._engine, self._lease, supervisor=supervisor, expected=expected)
        return (why is None, why or "ready")


class _Handler(BaseHTTPRequestHandler):
    probe: Probe

    def do_GET(self) -> None:
        check = {LIVE_PATH: self.probe.live, READY_PATH: self.probe.ready}.get(self.path)
        if check is None:
            self._answer(404, {"error": f"try {LIVE_PATH} or {READY_PATH}"})
            return
        try:
            ok, detail = check()
        except Exception as exc:  # a probe that cannot answer says "no", never crashes
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self._answer(200 if ok else 503, {"ok": ok, "detail": detail})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health: " + format, *args)


class Served(NamedTuple):
    """An endpoint being served: the port it listens on, and how to stop it."""

    port: int
    stop: Callable[[], None]


def serve_health(probe: Probe, port: int, host: str = "") -> Served:
    """Serve ``probe`` on ``host:port`` (0: any free port) in a daemon thread."""
    handler = type("HealthHandler", (_Handler,), {"probe": probe})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="endpoint-health", daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return Served(server.server_port, stop)


class DepthCollector:
    """Queue-depth gauges, counted by the database when scraped (exported by one process).

    ``<namespace>_queue_depth{queue,status}`` (instances per queue and status) and
    ``<namespace>_database_up`` (0 when the count failed: the scrape still answers).
    """

    def __init__(self, engine: Engine, namespace: str = "gen_durable") -> None:
        self._engine = engine
        self._namespace = namespace

    def describe(self) -> list[Any]:
        """Nothing: registering must not count (prometheus_client collects otherwise)."""
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily(
            f"{self._namespace}_queue_depth",
            "Instances per queue and status, when scraped.",
            labels=["queue", "status"],
        )
        up = GaugeMetricFamily(
            f"{self._namespace}_database_up", "1 when the queue depths could be counted."
        )
        try:
            with self._engine.connect() as conn:
                rows = store.queries.counts(conn)
        except DBAPIError as exc:
            log.debug("queue depth not counted: %s", exc)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
            for row in rows:
                depth.add_metric([row.queue, row.status], row.n)
        yield depth
        yield up


def serve_metrics(
    port: int,
    host: str,
    engine: Engine,
    multiprocess_dir: str | None = None,
) -> Served:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread.

    Without ``multiprocess_dir``: this process's step metrics (it instruments itself) and
    the queue depths. With it: the metrics the children wrote there, and the queue depths.
    """
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    from gen_durable.telemetry import prometheus

    if multiprocess_dir is None:
        registry = REGISTRY
        metrics = prometheus.instrument(registry)
        detach = metrics.detach
    else:
        registry = CollectorRegistry()
        registry.register(_LiveOnly(multiprocess_dir))
        MultiProcessCollector(registry, multiprocess_dir)  # type: ignore[no-untyped-call]
        detach = _nothing
    registry.register(DepthCollector(engine))
    server, _ = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        detach()

    return Served(server.server_port, stop)


def _nothing() -> None:
    """Nothing to detach."""


class _LiveOnly:
    """Drops the live gauges (``leader``) a dead child left in the multiprocess directory,
    as ``prometheus_client`` asks (``mark_process_dead``); collected before them."""

    def __init__(self, path: str) -> None:
        self._path = path

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.multiprocess import mark_process_dead

        for name in os.listdir(self._path):
            pid = name.removesuffix(".db").rpartition("_")[2]
            if name.startswith("gauge_live") and pid.isdigit() and not _running(int(pid)):
                mark_process_dead(int(pid), self._path)  # type: ignore[no-untyped-call]
        return iter(())


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: the pid was reused
        return False
    return True


class Endpoints:
    """The endpoints ``gen-durable run`` was asked for, around a Runner or a Supervisor.

    Args:
        metrics_port: The ``/metrics`` port (0: any free one); None: no metrics.
        health_port: The health probes' port (0: any free one); None: no probes.
        host: The address both listen on.
        lease: The runners' lease: a heartbeat older than that is not current.
        say: Where the endpoints' addresses are announced once they listen.
    """

    def __init__(
        self,
        metrics_port: int | None,
        health_port: int | None,
        host: str,
        lease: float,
        say: Callable[[str], None],
    ) -> None:
        self.metrics_port = metrics_port
        self.health_port = health_port
        self.host = host
        self.lease = lease
        self._say = say
        self._dir: str | None = None

    def multiprocess_dir(self) -> str:
        """A new directory for the children's metrics (removed when supervising ends)."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="gen-durable-metrics-")
        return self._dir

    @contextlib.contextmanager
    def running(self, node_id: str, url: Any) -> Iterator[None]:
        """Serve the endpoints of the started Runner ``node_id`` of this process."""
        engine = probe_engine(url)
        probe = RunnerProbe(node_id, self.lease, engine)
        try:
            with self._serving(probe, engine, None):
                yield
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def supervising(self, supervisor: Supervised, url: Any) -> Iterator[None]:
        """Serve the endpoints of ``supervisor``'s children, from the supervisor."""
        engine = probe_engine(url)
        probe = SupervisorProbe(supervisor, self.lease, engine)
        try:
            with self._serving(probe, engine, self._dir):
                yield
        finally:
            engine.dispose()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    @contextlib.contextmanager
    def _serving(self, probe: Probe, engine: Engine, directory: str | None) -> Iterator[None]:
        shown = self.host or "0.0.0.0"
        with contextlib.ExitStack() as stack:
            if self.metrics_port is not None:
                with _listening("metrics", self.host, self.metrics_port):
                    metrics = serve_metrics(self.metrics_port, self.host, engine, directory)
                stack.callback(metrics.stop)
                self._say(f"metrics: http://{shown}:{metrics.port}/metrics")
            if self.health_port is not None:
                with _listening("health probes", self.host, self.health_port):
                    health = serve_health(probe, self.health_port, self.host)
                stack.callback(health.stop)
                self._say(f"health: http://{shown}:{health.port}{LIVE_PATH} and {READY_PATH}")
            yield


@contextlib.contextmanager
def _listening(what: str, host: str, port: int) -> Iterator[None]:
    """A port that cannot be listened on is a configuration error (one line), not a crash."""
    try:
        yield
    except OSError as exc:
        where = f"{host or '0.0.0.0'}:{port}"
        raise ConfigurationError(f"cannot serve the {what} on {where}: {exc.strerror}") from exc
