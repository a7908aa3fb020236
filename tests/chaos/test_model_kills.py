"""The reference model under SIGKILL: runner processes die while the random workload runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from model import compare, model, observe, workload
from model.driver import Driver
from model.flows import CLASSES, WORK
from sqlalchemy import Engine

from chaos.harness import WAIT, Cluster, kill_during, tier, value

pytestmark = pytest.mark.chaos

SEED = int(os.environ.get("GD_MODEL_SEED", "77003"))


def _transitions(engine: Engine) -> int:
    return int(value(engine, "SELECT count(*) FROM gen_durable.gd_history"))


def _at_least(plans: list[dict[str, Any]]) -> int:
    """Transitions the workload commits for sure: each top-level instance up to the first
    point where it needs a signal or its children (the model without events)."""
    state = lambda p: {"script": p["script"], "seen": []}  # noqa: E731
    return sum(len(model.run(CLASSES[p["cls"]], state(p), []).commits) for p in plans)


def test_model_equivalence_under_kills(
    engine: Engine, db_url: str, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """A random workload of every outcome, signalled from four threads, while runner
    processes are SIGKILLed and replaced.

    Every instance commits what the reference model computes from the events it saw —
    lost leases included, so the re-runs and attempts the kills cost are the only
    differences they make (mismatches = 0).
    """
    count, processes, kills = tier((150, 3, 3), (2000, 3, 20))
    observe.prepare(engine)
    plans = workload.plans(SEED, count)
    cluster = Cluster(db_url, tmp_path, lease=3.0, module="model.worker")
    driver = Driver(engine, plans)
    failure: list[BaseException] = []
    slow = {WORK: "0.03"}  # steps in flight when a runner dies

    def drive() -> None:
        try:
            driver.run(WAIT)
        except BaseException as exc:  # reported below
            failure.append(exc)

    started = time.monotonic()
    try:
        cluster.start_many(processes, env=slow)
        driver.create()
        thread = threading.Thread(target=drive, name="model-driver", daemon=True)
        thread.start()
        kill_during(
            engine,
            cluster,
            None,
            kills,
            replace=lambda: cluster.start(wait=False, env=slow),
            measure=_transitions,
            total=_at_least(plans),
        )
        thread.join(WAIT)
        assert not thread.is_alive(), "the driver did not finish"
        for worker in cluster.alive():
            cluster.stop(worker)
    finally:
        cluster.close()
    if failure:
        raise failure[0]
    elapsed = time.monotonic() - started
    verdict = compare.check(observe.read(engine), driver.ids, plans, SEED, kills=cluster.kills)
    figures.update(
        {
            "seed": SEED,
            **verdict.figures,
            "processes": processes,
            "kills": cluster.kills,
            "rescues": driver.rescued,
            "seconds": round(elapsed, 1),
        }
    )
    verdict.assert_ok()
    assert cluster.kills >= kills
