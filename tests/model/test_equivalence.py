"""The engine against the reference model: a random workload on a Runner and PostgreSQL.

Hundreds of instances of the workload (:mod:`model.workload`) run at once on one
in-process Runner, signalled by four sender threads (:mod:`model.driver`); then every
instance's trail — its committed transitions, each run's pack and children, its signals'
consumption, its end — must be the one the model computes from the events it saw.

``GD_MODEL_SEED`` picks the workload (a failure prints it); ``GD_MODEL_INSTANCES`` its
size.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Engine

from gen_durable import Runner
from gen_durable.runtime.notify import libpq_dsn
from model import compare, coverage, flows, observe, workload
from model.driver import Driver

SEED = int(os.environ.get("GD_MODEL_SEED", "20141"))
INSTANCES = int(os.environ.get("GD_MODEL_INSTANCES", "500"))
SETTLE = 240.0
"""Generous bound for the workload to finish (a failure, never a figure)."""


def test_every_instance_commits_what_the_model_computes(engine: Engine) -> None:
    observe.prepare(engine)
    flows.configure(libpq_dsn(engine))
    plans = workload.plans(SEED, INSTANCES)
    driver = Driver(engine, plans)
    started = time.monotonic()
    with Runner(engine, queues={"default": 8}, poll_interval=0.05, grace=5.0):
        driver.create()
        driver.run(SETTLE)
    verdict = compare.check(observe.read(engine), driver.ids, plans, SEED)
    print(f"seed {SEED}: {verdict.figures}, {time.monotonic() - started:.1f}s")
    verdict.assert_ok()
    assert verdict.figures["instances"] >= INSTANCES
    exercised = coverage.count(verdict.cases, plans)
    print(f"rules exercised: {dict(sorted(exercised.items()))}")
    missing = [rule for rule in coverage.RULES if not exercised[rule]]
    assert not missing, f"seed {SEED} left rules unexercised: {missing}; {exercised}"
