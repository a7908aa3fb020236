"""Random SIGKILL of runner processes while keyed, rate-limited and fan-out work runs."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _support.helpers import count
from procs import flow_evidence as evidence
from procs.flow_worker import RATE, Fan, Keyed, Metered, setup
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from chaos.harness import Cluster, kill_during, tier, wait_for

pytestmark = pytest.mark.chaos

FSMS = [Keyed.name, Metered.name, Fan.name]
KEYS = [f"k{i}" for i in range(4)]
LIMIT = 2
PARTITIONS = ["a", "b"]


@pytest.fixture
def flow_cluster(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[Cluster]:
    """Runner processes of ``procs.flow_worker`` on the test's database."""
    setup(engine)
    cluster = Cluster(db_url, tmp_path, lease=1.5, concurrency=4, module="procs.flow_worker")
    yield cluster
    cluster.close()


def insert_workload(engine: Engine, keyed: int, metered: int, fans: int) -> int:
    """Insert the work; returns how many steps will commit (one effect row each)."""
    specs = [
        Keyed.new(
            args={"key": KEYS[n % len(KEYS)], "sleep": 0.2},
            concurrency_key=KEYS[n % len(KEYS)],
            concurrency_limit=LIMIT,
        )
        for n in range(keyed)
    ]
    specs += [
        Metered.new(state={"p": PARTITIONS[n % 2], "w": 1 + n % 3, "sleep": 0.05})
        for n in range(metered)
    ]
    fan_state = {"keys": KEYS, "limit": LIMIT, "partitions": PARTITIONS, "sleep": 0.2}
    specs += [Fan.new(state=fan_state) for _ in range(fans)]
    with Session(engine) as s, s.begin():
        durable.insert_all(s, specs)
    # Keyed: one step; Metered: prep and call; Fan: spawn and join, and its children.
    return keyed + 2 * metered + fans * (2 + len(KEYS) + 2 * len(PARTITIONS))


def effects(engine: Engine) -> int:
    return count(engine, "SELECT count(*) FROM chaos_effects")


def test_random_sigkill_under_concurrency_keys_rate_limits_and_fan_out(
    engine: Engine, flow_cluster: Cluster, figures: dict[str, Any]
) -> None:
    """Random SIGKILL of runner processes while keyed jobs, a partitioned weighted rate
    limit and fan-out parents with keyed and metered children run.

    Nothing is lost and every step committed once; no concurrency key ever had more than
    its limit of slots held (claim to release, including slots of killed runners until the
    reaper took them back); at the end no row holds a slot; every rate-limit window stayed
    within its bound.
    """
    keyed, metered, fans, kills = tier((80, 60, 10, 6), (600, 400, 80, 25))
    steps = insert_workload(engine, keyed, metered, fans)
    started = time.monotonic()
    flow_cluster.start_many(3)
    kill_during(engine, flow_cluster, None, kills, measure=effects, total=steps)
    wait_for(lambda: effects(engine) == steps, what="every step committed")
    elapsed = time.monotonic() - started

    problems: list[str] = []
    instances = evidence.rows(
        engine,
        "SELECT id, fsm, status, version, parent_id FROM gen_durable.gd_instances "
        "WHERE fsm = ANY(:f)",
        f=FSMS,
    )
    committed: dict[int, list[int]] = defaultdict(list)
    joins: dict[int, Any] = {}
    for e in evidence.rows(engine, "SELECT instance_id, version, step, info FROM chaos_effects"):
        committed[e.instance_id].append(e.version)
        if e.step == "join":
            joins[e.instance_id] = e.info
    lost = 0
    for i in instances:
        if i.status != "done" or sorted(committed[i.id]) != list(range(i.version)):
            lost += 1
            problems.append(f"{i.fsm} {i.id} ended {i.status} v{i.version}: {committed[i.id]}")
    per_fan = len(KEYS) + len(PARTITIONS)
    bad_joins = [
        (i.id, joins.get(i.id))
        for i in instances
        if i.fsm == Fan.name and joins.get(i.id) != ["done"] * per_fan
    ]
    problems += [f"fan {iid} joined {seen}" for iid, seen in bad_joins]

    found = evidence.keys(engine)
    key_problems, peaks = evidence.key_problems(found)
    problems += key_problems
    slots_left = sum(k.open for k in found.values()) + count(
        engine,
        "SELECT count(*) FROM gen_durable.gd_instances "
        "WHERE concurrency_key IS NOT NULL AND status IN ('running', 'blocked')",
    )
    if slots_left:
        problems.append(f"{slots_left} rows still hold or wait for a key")
    rate_problems, rates = evidence.rate_problems(evidence.buckets(engine), RATE, (0.5, 1.0, 2.0))
    problems += rate_problems

    exits = evidence.rows(
        engine,
        "SELECT concurrency_key IS NOT NULL AS keyed, rate_key IS NOT NULL AS metered "
        "FROM flow_status WHERE old = 'running' AND error_type = 'LeaseExpired'",
    )
    claims = evidence.rows(
        engine,
        "SELECT count(*) AS n, count(DISTINCT (instance_id, version)) AS distinct_n "
        "FROM flow_status WHERE new = 'running'",
    )[0]
    figures.update(
        {
            "instances": len(instances),
            "children": fans * per_fan,
            "steps": steps,
            "kills": flow_cluster.kills,
            "re_runs": claims.n - claims.distinct_n,
            "lease_expiries": len(exits),
            "keyed_slots_reaped": sum(1 for e in exits if e.keyed),
            "metered_claims_reaped": sum(1 for e in exits if e.metered),
            "lost": lost,
            "key_limit": LIMIT,
            "key_peak": max(peaks.values()),
            "key_bound_exceeded": len(key_problems),
            "slots_left": slots_left,
            "rate_bound_exceeded": len(rate_problems),
            "busiest_1s_tokens": max(r["busiest_1.0s"][0] for r in rates.values()),
            "rate_bound_1s": max(r["busiest_1.0s"][1] for r in rates.values()),
            "bad_joins": len(bad_joins),
            "seconds": round(elapsed, 1),
        }
    )
    assert not problems, "\n".join(problems[:30])
    assert flow_cluster.kills >= kills
