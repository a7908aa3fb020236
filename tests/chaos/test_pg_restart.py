"""PostgreSQL crashed (immediate shutdown) and restarted several times in the middle of a run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support.dbutil import EmbeddedServer, own_server
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from chaos.harness import (
    Cluster,
    Sender,
    Workload,
    prepare,
    progress,
    tier,
    verify,
    wait_finished,
    wait_for,
)
from gen_durable.store import schema

pytestmark = pytest.mark.chaos


@pytest.fixture
def private_server() -> Iterator[EmbeddedServer]:
    """A server of this test's own: it is crashed and restarted, never the shared one."""
    with own_server() as server:
        yield server


@pytest.fixture
def private_engine(private_server: EmbeddedServer) -> Iterator[Engine]:
    engine = create_engine(private_server.url, poolclass=NullPool)
    schema.install(engine)
    prepare(engine)
    yield engine
    engine.dispose()


def test_postgres_restarted_mid_run(
    private_server: EmbeddedServer,
    private_engine: Engine,
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    """PostgreSQL stopped in immediate mode (a crash: recovery runs at start) and started
    again, several times while runners work.

    The runners reconnect by themselves, no runner process dies, and nothing is lost:
    every instance finishes, each transition commits once, signals are consumed once.
    Recovery time: from the server accepting connections again to the next committed
    transition.
    """
    count, restarts = tier((200, 2), (2000, 5))
    engine = private_engine
    workload = Workload()
    workload.add(engine, count, wait_every=5, spawn_every=10, children=3)
    cluster = Cluster(private_server.url, tmp_path)
    try:
        cluster.start_many(3)
        sender = Sender(engine, workload.keys(workload.wait), spread=0.05)
        sender.start()
        total = 5 * count
        outages: list[float] = []
        recoveries: list[float] = []
        for k in range(1, restarts + 1):
            target = total * k // (restarts + 1)
            wait_for(lambda target=target: progress(engine) >= target)
            down = time.monotonic()
            private_server.stop("immediate")
            time.sleep(1.0)  # an outage, not just a blip
            private_server.start()
            up = time.monotonic()
            outages.append(up - down)
            # Progress as the server came back (nothing commits while it recovers) ...
            before = wait_for(lambda: progress(engine) + 1, interval=0.01) - 1
            # ... then the first transition committed after it.
            wait_for(lambda before=before: progress(engine) > before, interval=0.02)
            recoveries.append(time.monotonic() - up)
        sender.finish()
        wait_finished(engine, workload)
        survivors = len(cluster.alive())
        verdict = verify(engine, workload)
    finally:
        cluster.close()
    figures.update(
        {
            "instances": count,
            "restarts": restarts,
            "outage_s_worst": round(max(outages), 1),
            "recovery_s_worst": round(max(recoveries), 2),
            "recovery_s_each": [round(r, 2) for r in recoveries],
            "runner_processes_died": 3 - survivors,
            **{k: v for k, v in verdict.figures.items() if k not in ("instances", "steps")},
        }
    )
    verdict.assert_ok()
    assert survivors == 3
