"""pytest fixtures for testing code built on gen_durable (registered automatically).

Define a ``durable_engine`` fixture returning a SQLAlchemy ``Engine`` on a test database
with the gen_durable schema installed; the fixtures below build on it:

- ``durable_drain``: :func:`gen_durable.testing.drain` bound to that engine;
- ``durable_advance``: :func:`gen_durable.testing.advance` bound to that engine;
- ``durable_events``: a :class:`gen_durable.telemetry.Recording` of the telemetry events
  emitted during the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from gen_durable.runtime.steps import StepReport
    from gen_durable.telemetry import Recording


@pytest.fixture
def durable_engine() -> Engine:
    """Override me: an Engine on a test database with the gen_durable schema."""
    raise pytest.UsageError(
        "the gen_durable fixtures need a `durable_engine` fixture: define one in your "
        "conftest.py returning a SQLAlchemy Engine on a test database where the "
        "gen_durable schema is installed (gen_durable.schema.install(engine))"
    )


@pytest.fixture
def durable_drain(durable_engine: Engine) -> Callable[..., list[StepReport]]:
    """``durable_drain(queues=..., fsms=..., max_steps=...)``: run what is runnable."""
    from gen_durable.testing import drain

    def run(**options: Any) -> list[StepReport]:
        return drain(durable_engine, **options)

    return run


@pytest.fixture
def durable_advance(durable_engine: Engine) -> Callable[[float], int]:
    """``durable_advance(seconds)``: let durable time pass for waiting instances."""
    from gen_durable.testing import advance

    def run(seconds: float) -> int:
        return advance(durable_engine, seconds)

    return run


@pytest.fixture
def durable_events() -> Iterator[Recording]:
    """Every telemetry event emitted while the test runs."""
    from gen_durable.telemetry import record

    with record() as recording:
        yield recording
