"""Garbage collection with zero retention, running through a chaos run."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, event

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
from gen_durable import store

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


def test_verify_reads_one_snapshot_while_gc_deletes(chaos_engine: Engine, cluster: Cluster) -> None:
    """GC keeps running while verify reads: forced here, it deletes every finished flow
    right after verify read the instances. Verify must judge what it read, not find a flow
    present and its signal gone (a CI failure when it read table by table)."""
    workload = Workload()
    workload.add(chaos_engine, 8, wait_every=2, spawn_every=0, children=0, grouped=False)
    cluster.start_many(1)
    sender = Sender(chaos_engine, workload.keys(workload.wait), spread=0.0)
    sender.start()
    sender.finish()
    wait_finished(chaos_engine, workload)
    collected: list[int] = []

    def collect_after_instances_read(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not collected and "FROM gen_durable.gd_instances WHERE fsm IN" in statement:
            collected.append(0)
            with chaos_engine.begin() as gc:
                collected.append(store.maintenance.collect_garbage(gc, 0, 1000, None))

    event.listen(chaos_engine, "after_cursor_execute", collect_after_instances_read)
    try:
        verdict = verify(chaos_engine, workload, collected=True)
    finally:
        event.remove(chaos_engine, "after_cursor_execute", collect_after_instances_read)
    assert collected[-1] == 8  # every flow was deleted between verify's reads
    verdict.assert_ok()
