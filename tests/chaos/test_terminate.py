"""Every second, every connection of every runner is terminated (pg_terminate_backend)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import (
    Cluster,
    Sender,
    Workload,
    step_gaps,
    tier,
    verify,
    wait_finished,
    worst_pickup,
)
from chaos.worker import APPLICATION

pytestmark = pytest.mark.chaos

TERMINATE = f"""
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS killed,
       count(*) FILTER (WHERE query ILIKE 'LISTEN%%') AS listen
FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE '{APPLICATION}-%%'
"""


class Terminator(threading.Thread):
    def __init__(self, engine: Engine) -> None:
        super().__init__(daemon=True, name="chaos-terminator")
        self.engine = engine
        self.stop = threading.Event()
        self.rounds = 0
        self.killed = 0
        self.listen = 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with self.engine.connect() as conn:
                row = conn.exec_driver_sql(TERMINATE).one()
            self.rounds += 1
            self.killed += row.killed
            self.listen += row.listen


def test_runner_connections_terminated_every_second(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any]
) -> None:
    """``pg_terminate_backend`` on every connection of the runners every second — the
    LISTEN connection, the pool's, the committer's — while instances keep arriving.

    Work keeps flowing: every instance finishes, 0 lost, 0 double commits. Figures: the
    pickup delay (insert committed → first step started) and the worst gap between steps.
    """
    count = tier(150, 1500)
    workload = Workload()
    cluster.start_many(2)
    terminator = Terminator(chaos_engine)
    terminator.start()
    started = time.monotonic()
    for _ in range(count):  # one flow every 50 ms, so that pickups are measured throughout
        workload.add(chaos_engine, 1, wait_every=5, spawn_every=10, children=2)
        time.sleep(0.05)
    sender = Sender(chaos_engine, workload.keys(workload.wait), spread=0.0)
    sender.start()
    sender.finish()
    wait_finished(chaos_engine, workload)
    terminator.stop.set()
    terminator.join()
    elapsed = time.monotonic() - started
    verdict = verify(chaos_engine, workload)
    figures.update(
        {
            "instances": count,
            "seconds": round(elapsed, 1),
            "termination_rounds": terminator.rounds,
            "connections_terminated": terminator.killed,
            "listen_connections_terminated": terminator.listen,
            **worst_pickup(chaos_engine, list(workload.ids.values())),
            "worst_step_gap_s": step_gaps(chaos_engine, workload),
            **{k: v for k, v in verdict.figures.items() if k not in ("instances", "steps")},
        }
    )
    verdict.assert_ok()
    assert terminator.listen > 0
