"""Where a tracer plugs into the client API and the runtime, without either importing one.

Standard library only. :func:`gen_durable.telemetry.otel.instrument` installs a
:class:`Tracer` in :data:`tracer`; while it is None (the default) tracing costs the API
and the runtime one None check. A trace context travels as text: a W3C ``traceparent``,
then a space and the ``tracestate`` when there is one; it is stored with each new
instance (``gd_instances.trace_context``) and handed back with its claim.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Tracer(Protocol):
    """What the API and the runtime ask of a tracer."""

    def current(self) -> str | None:
        """The trace context of the current span, or None when no span is current."""

    def of_step(self, instance_id: int) -> str | None:
        """The trace context of the span of the instance's step running in this process.

        The children of a Spawn take their parent's step span as their parent: they are
        inserted by the transition's commit, on a thread where that span is not current.
        """

    def step_scope(self, instance_id: int) -> AbstractContextManager[object]:
        """Make the instance's step span current while the step's code runs."""


tracer: Tracer | None = None
"""The installed tracer; None: tracing is off."""


def current() -> str | None:
    """The current trace context, or None when tracing is off or no span is current."""
    installed = tracer
    return None if installed is None else installed.current()
