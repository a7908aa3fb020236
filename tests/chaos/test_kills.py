"""Random SIGKILL of runner processes in the middle of a run."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import (
    Cluster,
    Sender,
    Workload,
    kill_during,
    tier,
    verify,
    wait_finished,
)

pytestmark = pytest.mark.chaos


def test_random_sigkill_of_runners(
    chaos_engine: Engine, cluster: Cluster, figures: dict[str, Any]
) -> None:
    """Random SIGKILL of runner processes while flows run, await signals and spawn children.

    Every instance finishes (0 lost), each transition commits once (0 double commits),
    every re-run follows a lost claim, every signal is consumed once by its instance.
    """
    count, kills = tier((200, 5), (2000, 20))
    workload = Workload()
    workload.add(chaos_engine, count, wait_every=5, spawn_every=10, children=3)
    started = time.monotonic()
    cluster.start_many(3)
    sender = Sender(chaos_engine, workload.keys(workload.wait), spread=0.02)
    sender.start()
    kill_during(chaos_engine, cluster, workload, kills)
    sender.finish()
    wait_finished(chaos_engine, workload)
    elapsed = time.monotonic() - started
    verdict = verify(chaos_engine, workload)
    figures.update(
        {
            "instances": count,
            "steps": verdict.figures["steps"],
            "kills": cluster.kills,
            **{k: v for k, v in verdict.figures.items() if k not in ("instances", "steps")},
            "seconds": round(elapsed, 1),
        }
    )
    verdict.assert_ok()
    assert cluster.kills >= kills
