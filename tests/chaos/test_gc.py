"""Garbage collection with zero retention, running through a chaos run."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import (
    Cluster,
    Sender,
    Workload,
    effects,
    kill_during,
    tier,
    verify,
    wait_finished,
)

pytestmark = pytest.mark.chaos

GC = ["--gc-retention", "0", "--gc-interval", "0.2"]


def test_gc_with_zero_retention_during_chaos(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any]
) -> None:
    """Every runner collects garbage with zero retention every 0.2 s while flows run,
    await signals and spawn children, and runners are killed.

    GC deletes only finished instances: no live instance, no signal of a live instance,
    no child of an unfinished parent; every flow still finishes with its children's
    outcomes and its own signal.
    """
    count, kills = tier((150, 3), (1500, 10))
    workload = Workload()
    workload.add(chaos_engine, count, wait_every=4, spawn_every=3, children=3, grouped=False)
    started = time.monotonic()
    cluster.start_many(3, options=GC)
    sender = Sender(chaos_engine, workload.keys(workload.wait), spread=0.02)
    sender.start()
    kill_during(
        chaos_engine,
        cluster,
        workload,
        kills,
        replace=lambda: cluster.start(options=GC, wait=False),
        measure=effects,
    )
    sender.finish()
    wait_finished(chaos_engine, workload)
    elapsed = time.monotonic() - started
    verdict = verify(chaos_engine, workload, collected=True)
    figures.update(
        {
            "instances": count,
            "kills": cluster.kills,
            "seconds": round(elapsed, 1),
            **{k: v for k, v in verdict.figures.items() if k not in ("instances", "steps")},
        }
    )
    verdict.assert_ok()
    assert verdict.figures["gc_deleted"] > 0
