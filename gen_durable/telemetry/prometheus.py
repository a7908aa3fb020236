"""Prometheus counters and histograms fed by telemetry events (the ``prometheus`` extra).

>>> from gen_durable.telemetry import prometheus
>>> metrics = prometheus.instrument()          # registers on prometheus_client's REGISTRY

Expose them the way your service already does (``prometheus_client.start_http_server``,
``make_wsgi_app``, ...). Metrics are per process: each worker exports its own steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "gen_durable.telemetry.prometheus needs prometheus_client: "
        "pip install 'gen_durable[prometheus]'"
    ) from exc

from gen_durable.events import Event
from gen_durable.telemetry import attach

__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics", "instrument"]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Step duration buckets (seconds)."""


class PrometheusMetrics:
    """The metrics, and the telemetry handler that updates them.

    ``<namespace>_`` prefixes every name (default ``gen_durable``):

    | metric | type | labels |
    |---|---|---|
    | ``inserted_total`` | counter | fsm, queue |
    | ``signals_total`` | counter | signal |
    | ``claimed_total`` | counter | queue |
    | ``steps_total`` | counter | fsm, step, outcome (the decision's kind, or ``fenced``) |
    | ``step_duration_seconds`` | histogram | fsm, step |
    | ``step_exceptions_total`` | counter | fsm, step, error (the exception's type) |
    | ``retries_total`` | counter | fsm, step |
    | ``reaped_total`` | counter | result (``available`` or ``failed``) |
    | ``reruns_total`` | counter | reason (``lease_expired``, ``released`` or ``raised``) |
    | ``gc_deleted_total`` | counter | |
    | ``leader`` | gauge | role (1 while this process leads) |
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "gen_durable",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.detach: Callable[[], None] = lambda: None
        """Stop updating the metrics (set by :func:`instrument`)."""
        reg = REGISTRY if registry is None else registry
        ns = namespace
        self.inserted = Counter(
            "inserted", "Instances inserted.", ["fsm", "queue"], namespace=ns, registry=reg
        )
        self.signals = Counter("signals", "Signals stored.", ["signal"], namespace=ns, registry=reg)
        self.claimed = Counter(
            "claimed", "Instances claimed by this process.", ["queue"], namespace=ns, registry=reg
        )
        self.steps = Counter(
            "steps",
            "Steps run, by outcome (the decision's kind, or 'fenced' when the commit was "
            "fenced out).",
            ["fsm", "step", "outcome"],
            namespace=ns,
            registry=reg,
        )
        self.duration = Histogram(
            "step_duration_seconds",
            "Time from claim hand-over to committed transition, per step.",
            ["fsm", "step"],
            namespace=ns,
            registry=reg,
            buckets=tuple(buckets),
        )
        self.exceptions = Counter(
            "step_exceptions",
            "Steps that raised.",
            ["fsm", "step", "error"],
            namespace=ns,
            registry=reg,
        )
        self.retries = Counter(
            "retries",
            "Failed steps scheduled to run again.",
            ["fsm", "step"],
            namespace=ns,
            registry=reg,
        )
        self.reaped = Counter(
            "reaped",
            "Expired leases returned by the reaper (available again, or failed).",
            ["result"],
            namespace=ns,
            registry=reg,
        )
        self.reruns = Counter(
            "reruns",
            "Steps that ran without their transition landing, so they run again (or failed).",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        self.gc_deleted = Counter(
            "gc_deleted", "Finished instances deleted by GC.", namespace=ns, registry=reg
        )
        self.leader = Gauge(
            "leader",
            "1 while this process holds the role.",
            ["role"],
            namespace=ns,
            registry=reg,
            multiprocess_mode="livemax",  # under a supervisor: 1 while one of its children leads
        )

    def __call__(self, event: Event) -> None:
        """The telemetry handler: update the metric the event concerns."""
        handler = self._handlers.get(event.name)
        if handler is not None:
            handler(self, event)

    def _insert(self, event: Event) -> None:
        for fsm, queue in zip(event["fsms"], event["queues"], strict=True):
            self.inserted.labels(fsm, queue).inc()

    def _signal(self, event: Event) -> None:
        if not event["duplicate"]:
            self.signals.labels(event["signal"]).inc()

    def _claim(self, event: Event) -> None:
        self.claimed.labels(event["queue"]).inc(event["count"])

    def _stop(self, event: Event) -> None:
        outcome = event["kind"] if event["committed"] else "fenced"
        self.steps.labels(event["fsm"], event["step"], outcome).inc()
        self.duration.labels(event["fsm"], event["step"]).observe(event["duration"])

    def _exception(self, event: Event) -> None:
        error = type(event["exception"]).__name__
        self.exceptions.labels(event["fsm"], event["step"], error).inc()
        self.reruns.labels("raised").inc()

    def _retry(self, event: Event) -> None:
        self.retries.labels(event["fsm"], event["step"]).inc()

    def _reaped(self, event: Event) -> None:
        failed = len(event["failed_ids"])
        self.reruns.labels("lease_expired").inc(event["count"])
        if event["count"] - failed:
            self.reaped.labels("available").inc(event["count"] - failed)
        if failed:
            self.reaped.labels("failed").inc(failed)

    def _release(self, event: Event) -> None:
        self.reruns.labels("released").inc(event["count"])

    def _gc(self, event: Event) -> None:
        self.gc_deleted.inc(event["deleted"])

    def _leadership(self, event: Event) -> None:
        self.leader.labels(event["role"]).set(1 if event["leader"] else 0)

    _handlers: ClassVar[dict[str, Callable[[PrometheusMetrics, Event], None]]] = {
        "insert": _insert,
        "signal": _signal,
        "claim": _claim,
        "step.stop": _stop,
        "step.exception": _exception,
        "retry": _retry,
        "reaper.rescue": _reaped,
        "release": _release,
        "gc": _gc,
        "leadership": _leadership,
    }


def instrument(
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "gen_durable",
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> PrometheusMetrics:
    """Create the metrics on ``registry`` (default: the global one) and attach them.

    Call it once per process and registry (registering the same names twice is an
    error in ``prometheus_client``); ``metrics.detach()`` stops updating them.
    """
    metrics = PrometheusMetrics(registry, namespace=namespace, buckets=buckets)
    metrics.detach = attach(metrics, PrometheusMetrics._handlers.keys())
    return metrics
