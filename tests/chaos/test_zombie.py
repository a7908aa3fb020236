"""A runner frozen past its lease (SIGSTOP), then thawed (SIGCONT): its commits are refused."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import Cluster, Worker, Workload, query, value, verify, wait_finished, wait_for
from chaos.worker import APPLICATION

pytestmark = pytest.mark.chaos

FLOWS = 4
LEASE = 2.0


def _backends(engine: Engine, worker: Worker) -> list[Any]:
    return query(
        engine,
        "SELECT state, wait_event_type, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = :app",
        app=f"{APPLICATION}-{worker.pid}",
    )


def _freeze(engine: Engine, worker: Worker, *, holding_effects: bool) -> None:
    """SIGSTOP the runner while none of its own transactions is open (only the steps'
    ``ctx.session`` writes may be, when ``holding_effects``): a runner frozen inside a
    heartbeat would keep its rows locked, which is another test."""
    for _ in range(100):
        os.kill(worker.pid, signal.SIGSTOP)
        busy = [
            b
            for b in _backends(engine, worker)
            if b.state != "idle" and not (holding_effects and "chaos_effects" in b.query)
        ]
        if not busy:
            return
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("could not freeze the runner outside a transaction")


@pytest.mark.parametrize("path", ["grouped", "session"])
def test_zombie_runner_commits_are_refused(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any], path: str
) -> None:
    """A runner frozen (SIGSTOP) in the middle of steps until its leases expire and another
    runner re-ran them, then thawed (SIGCONT).

    Its commits are refused — through the grouped committer, and through ``ctx.session``,
    whose uncommitted writes roll back (the runner that took over waits on them, then
    commits its own). No run whose lease expired commits; 0 lost, 0 double commits.
    """
    slow = "s1" if path == "grouped" else "s2"  # s2 writes through ctx.session first
    workload = Workload()
    workload.add(chaos_engine, FLOWS)
    zombie = cluster.start(
        env={"GD_CHAOS_STEP_SECONDS": "8", "GD_CHAOS_SLOW_STEPS": slow}, lease=LEASE
    )
    in_slow_step = "SELECT count(*) FROM chaos_runs WHERE step = :s AND pid = :p"
    wait_for(lambda: value(chaos_engine, in_slow_step, s=slow, p=zombie.pid) == FLOWS)
    _freeze(chaos_engine, zombie, holding_effects=path == "session")
    frozen_at = time.monotonic()
    rescuer = cluster.start(lease=LEASE)
    blocked = 0
    try:
        if path == "grouped":
            wait_finished(chaos_engine, workload)
        else:
            # The re-runs wait on the zombie's uncommitted effect rows.
            def waiting() -> int:
                return sum(
                    1 for b in _backends(chaos_engine, rescuer) if b.wait_event_type == "Lock"
                )

            blocked = wait_for(lambda: waiting() >= FLOWS and waiting())
    finally:
        os.kill(zombie.pid, signal.SIGCONT)
    frozen = time.monotonic() - frozen_at
    wait_finished(chaos_engine, workload)
    fenced = "SELECT count(*) FROM chaos_fenced WHERE pid = :p AND step = :s"
    wait_for(lambda: value(chaos_engine, fenced, p=zombie.pid, s=slow) == FLOWS)

    verdict = verify(chaos_engine, workload)
    committed_by = {
        r.trail[1 if slow == "s1" else 2].split(":")[3]
        for r in query(
            chaos_engine,
            "SELECT state->'trail' AS trail FROM gen_durable.gd_instances WHERE fsm = 'chaos.Flow'",
        )
    }
    figures.update(
        {
            "commit_path": path,
            "frozen_s": round(frozen, 1),
            "lease_s": LEASE,
            "zombie_steps": FLOWS,
            "zombie_leases_expired": verdict.figures["lease_expiries"],
            "zombie_commits_refused": int(value(chaos_engine, fenced, p=zombie.pid, s=slow)),
            "rescuer_blocked_on_zombie_writes": blocked,
            "lost": verdict.figures["lost"],
            "double_commits": verdict.figures["double_commits"],
        }
    )
    verdict.assert_ok()
    assert committed_by == {str(rescuer.pid)}
    assert verdict.figures["lease_expiries"] >= FLOWS
