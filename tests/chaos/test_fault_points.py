"""SIGKILL at each named fault point of the runtime, then recovery by clean runners."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import Cluster, Workload, send_signals, verify, wait_finished
from gen_durable import faults

pytestmark = pytest.mark.chaos

AT_ONCE = ("claim", "after_claim", "in_step", "before_commit", "commit", "after_commit")
"""Points every runner reaches as soon as it has work."""


def test_sigkill_at_each_fault_point(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any]
) -> None:
    """A runner killed at each named fault point (claim, in the step, around the commit,
    in a Spawn's commit, heartbeat, reaper, GC, signal delivery).

    Each armed runner dies by its own SIGKILL exactly there; clean runners then finish
    everything: 0 lost, 0 double commits, children spawned once, signals consumed once.
    """
    workload = Workload()
    # Finished instances for the GC point, and work for everyone after.
    workload.add(chaos_engine, 10)
    first = cluster.start()
    wait_finished(chaos_engine, workload)
    cluster.stop(first)
    workload.add(chaos_engine, 60, wait_every=4, spawn_every=3, children=2)

    armed = {point: cluster.start(f"{point}:kill", wait=False) for point in AT_ONCE}
    # A Spawn commit needs a flow at s3; the armed runner gets them there itself.
    armed["spawn_commit"] = cluster.start("spawn_commit:kill", wait=False)
    # Heartbeats extend leases only while steps run: slow steps.
    armed["heartbeat"] = cluster.start(
        "heartbeat:kill", env={"GD_CHAOS_STEP_SECONDS": "2"}, wait=False
    )
    for worker in armed.values():
        worker.proc.wait(120)
    # Dead runners left leases behind: the next reaper to return them dies in its
    # transaction; GC with zero retention dies deleting the finished ones.
    armed["reaper"] = cluster.start("reaper:kill")
    armed["gc"] = cluster.start("gc:kill", options=["--gc-retention", "0", "--gc-interval", "0.3"])
    for point in ("reaper", "gc"):
        armed[point].proc.wait(120)
    # A client killed while it delivers a signal: its transaction never commits.
    keys = workload.keys(workload.wait)
    sender_exit = cluster.send(keys[:1], faults="signal:kill")

    died = {p: w.proc.returncode == -signal.SIGKILL for p, w in armed.items()}
    died["signal"] = sender_exit == -signal.SIGKILL
    assert all(died.values()), died
    assert set(died) == set(faults.POINTS), set(faults.POINTS) - set(died)

    cluster.start_many(2)
    send_signals(chaos_engine, keys)
    wait_finished(chaos_engine, workload)
    verdict = verify(chaos_engine, workload)
    figures.update(
        {
            "points": len(died),
            "killed_at_point": sum(died.values()),
            **{k: v for k, v in verdict.figures.items() if k != "steps"},
        }
    )
    verdict.assert_ok()
