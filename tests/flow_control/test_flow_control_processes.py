"""Flow control across several runner processes: rate limits, concurrency keys, priority,
pause/resume and cron under leader kills — checked on what the database recorded.

The runner processes run :mod:`procs.flow_worker`; :mod:`procs.flow_evidence` reads the
evidence (database time throughout) and computes the bounds.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _support.helpers import RunnerProcesses, count, wait_until
from procs import flow_evidence as evidence
from procs.flow_worker import RATE, SCHEDULE, Keyed, Metered, Task, setup
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Cron, Job, RateLimit, Runner, store
from gen_durable.errors import ConfigurationError, DefinitionError, ValidationError
from gen_durable.runtime.claiming import rate_limit_of

WIDTHS = (0.25, 0.5, 1.0, 2.0)
"""The window widths (seconds) of the sliding-window rate checks."""


@pytest.fixture
def workers(db_url: str, engine: Engine) -> Iterator[RunnerProcesses]:
    setup(engine)
    procs = RunnerProcesses("procs.flow_worker", db_url)
    yield procs
    procs.stop_all()


def finished(engine: Engine, fsm: str) -> int:
    return count(
        engine,
        "SELECT count(*) FROM gen_durable.gd_instances WHERE fsm = :f AND status = 'done'",
        f=fsm,
    )


def owners(engine: Engine, fsm: str) -> set[str]:
    """Runners (node ids) that claimed instances of ``fsm``."""
    return {
        r.owner
        for r in evidence.rows(
            engine,
            "SELECT DISTINCT owner FROM flow_status WHERE new = 'running' AND fsm = :f",
            f=fsm,
        )
    }


def test_a_partitioned_weighted_rate_limit_holds_across_three_runner_processes(
    engine: Engine, workers: RunnerProcesses
) -> None:
    """Two partitions of one weighted step's bucket, taken from by three processes.

    In every window (starting at every claim, and at every step start) each partition's
    weights stay within ``burst + rate x (window + slack)``, the slack being the measured
    claim-transaction skew (and, for starts, the claim-to-start lag); the bucket was the
    bottleneck: claims were deferred and the busiest 2 s window reached ``rate x 2``.
    """
    weights = [1, 2, 3] * 10
    workers.start_many(3, "--concurrency", "8", "--lease", "5")
    with Session(engine) as s, s.begin():
        durable.insert_all(
            s,
            [Metered.new(state={"p": p, "w": w, "sleep": 0.02}) for w in weights for p in "ab"],
        )
    wait_until(lambda: finished(engine, Metered.name) == 2 * len(weights), timeout=60)
    found = evidence.buckets(engine)
    assert sorted(found) == ["flowproc.Metered:call:a", "flowproc.Metered:call:b"]
    problems, report = evidence.rate_problems(found, RATE, WIDTHS)
    assert not problems, problems
    for b in found.values():
        assert sum(w for _, w in b.claims) == sum(weights)  # each run took its weight once
        assert len(b.starts) == len(weights)
        assert b.deferred > 0  # the bucket made claims wait ...
        assert evidence.busiest(b.claims, 2.0) >= RATE.per_second * 2  # ... at its full rate
        assert len(b.owners) >= 2, report  # taken from by several processes
    assert len(owners(engine, Metered.name)) == 3, report


T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _claim_metered(engine: Engine, at: float, limit: int) -> list[int]:
    with engine.begin() as conn:
        at_time = T0 + timedelta(seconds=at)
        rows = store.claims.claim(
            conn, "default", [Metered.name], limit, "n", 30, at_time, rate_limit_of
        )
    return [r.id for r in rows]


def test_a_claim_whose_transaction_began_earlier_never_refills_the_bucket_twice(
    engine: Engine,
) -> None:
    """Two claimers: B's transaction began later but locked the bucket first; then A's.

    A's earlier start must not wind the bucket's clock back, or the next claim is credited
    the time between A's and B's starts a second time.
    """
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Metered.new(state={"p": "a", "w": 1}) for _ in range(40)])
    with engine.begin() as conn:  # past "prep": every instance now waits on the bucket
        conn.exec_driver_sql(
            "UPDATE gen_durable.gd_instances SET step = 'call', version = 1, "
            "rate_key = 'flowproc.Metered:call:a', rate_weight = 1"
        )
    burst = int(RATE.burst)
    assert len(_claim_metered(engine, 5.0, burst)) == burst  # B: the full bucket, at T0+5
    assert _claim_metered(engine, 4.0, burst) == []  # A: began 1 s earlier, nothing left
    with engine.begin() as conn:
        assert len(store.maintenance.stage_due(conn, 100, T0 + timedelta(seconds=5))) == burst
    assert _claim_metered(engine, 5.0, 50) == []  # no time passed since B's refill
    with engine.begin() as conn:
        store.maintenance.stage_due(conn, 100, T0 + timedelta(seconds=5.5))
    assert len(_claim_metered(engine, 5.5, 50)) == RATE.per_second * 0.5


def test_concurrency_keys_hold_across_three_processes_and_a_hot_key_blocks_no_other(
    engine: Engine, workers: RunnerProcesses
) -> None:
    """A hot key with a long backlog, inserted first, and eight other keys, limit 2 each.

    No key ever had more than 2 slots held (claim to status change) or 2 steps running
    (start to end, database time); keys ran side by side; every other key finished before
    the hot key's backlog was through (no head-of-line blocking).
    """
    limit, hot, cold = 2, 24, [f"k{i}" for i in range(8)]
    workers.start_many(3, "--concurrency", "4", "--lease", "5")
    with Session(engine) as s, s.begin():
        specs = [("hot", 0.2)] * hot + [(k, 0.2) for k in cold for _ in range(3)]
        durable.insert_all(
            s,
            [
                Keyed.new(
                    args={"key": key, "sleep": sleep}, concurrency_key=key, concurrency_limit=limit
                )
                for key, sleep in specs
            ],
        )
    wait_until(lambda: finished(engine, Keyed.name) == len(specs), timeout=90)
    found = evidence.keys(engine)
    problems, peaks = evidence.key_problems(found)
    assert not problems, problems
    assert peaks["hot"] == limit  # the limit was reached, not just respected
    everything = [step for key in found.values() for step in key.steps]
    assert evidence.max_overlap(everything) > limit  # different keys ran at once
    assert sum(len(k.steps) for k in found.values()) == len(specs)
    blocked = count(engine, "SELECT count(*) FROM flow_status WHERE new = 'blocked'")
    assert blocked  # waiting instances were parked off the picker's path ...
    last_cold_end = max(end for k in cold for _, end in found[k].steps)
    last_hot_start = max(start for start, _ in found["hot"].steps)
    assert last_cold_end < last_hot_start  # ... so the others never queued behind them
    assert len(owners(engine, Keyed.name)) == 3


def claim_order(engine: Engine, queue: str) -> list[Any]:
    """Claims of ``queue`` in the order they happened: (instance id, priority, owner)."""
    return evidence.rows(
        engine,
        "SELECT c.instance_id, i.priority, c.owner FROM flow_status c "
        "JOIN gen_durable.gd_instances i ON i.id = c.instance_id "
        "WHERE c.new = 'running' AND i.queue = :q ORDER BY c.at, c.id",
        q=queue,
    )


def test_priority_then_fifo_order_across_processes(
    engine: Engine, workers: RunnerProcesses
) -> None:
    """One queue served by one process with one slot; another by three with one slot each.

    With one slot the claims follow (priority, FIFO) exactly. With three, a claim can only
    pass over what another process's claim held locked at that moment: no claim came
    before more than 2 instances that rank above it.
    """
    rng = random.Random(5)
    priorities = [rng.randrange(10) for _ in range(24)]
    with Session(engine) as s, s.begin():
        durable.pause_queue(s, "trio")  # until every process is up
        ids = {
            queue: durable.insert_all(
                s,
                [
                    Task.new(args={"n": n, "sleep": 0.02}, queue=queue, priority=p)
                    for n, p in enumerate(priorities)
                ],
            )
            for queue in ("solo", "trio")
        }
    workers.start("--queue", "solo=1")
    workers.start_many(3, "--queue", "trio=1")
    with Session(engine) as s, s.begin():
        durable.resume_queue(s, "trio")
    wait_until(lambda: finished(engine, Task.name) == 2 * len(priorities), timeout=60)

    def ranked(queue: str) -> list[int]:
        return [i for _, i in sorted(zip(priorities, ids[queue], strict=True))]

    solo = claim_order(engine, "solo")
    assert [c.instance_id for c in solo] == ranked("solo")
    trio = claim_order(engine, "trio")
    assert len({c.owner for c in trio}) == 3
    rank = {iid: r for r, iid in enumerate(ranked("trio"))}
    order = [rank[c.instance_id] for c in trio]
    passed_over = [sum(1 for later in order[k + 1 :] if later < r) for k, r in enumerate(order)]
    assert max(passed_over) <= 2, order
    assert sorted(order) == list(range(len(priorities)))


def test_a_paused_queue_starts_nothing_in_any_process_until_resumed(
    engine: Engine, workers: RunnerProcesses
) -> None:
    """Three processes drain a queue; it is paused part-way, then resumed.

    No claim began between the pause's commit and the resume; every step that started in
    that stretch was claimed before the pause committed (already in flight); work waited
    through the pause and all of it finished after the resume.
    """
    total = 60
    with Session(engine) as s, s.begin():
        durable.insert_all(s, [Task.new(args={"n": n, "sleep": 0.1}) for n in range(total)])
    workers.start_many(3, "--concurrency", "2", "--lease", "5")
    started = "SELECT count(*) FROM flow_runs WHERE event = 'start'"
    wait_until(lambda: count(engine, started) >= 12)
    with Session(engine) as s, s.begin():
        durable.pause_queue(s, "default")
    paused = evidence.db_time(engine)
    running = "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'running'"
    wait_until(lambda: count(engine, running) == 0)
    time.sleep(1.0)  # several claim rounds of every process while paused
    resumed = evidence.db_time(engine)
    with Session(engine) as s, s.begin():
        durable.resume_queue(s, "default")
    wait_until(lambda: finished(engine, Task.name) == total, timeout=60)
    claims = evidence.rows(
        engine,
        "SELECT instance_id, version, attempt, extract(epoch FROM tx_at)::float8 AS tx_at "
        "FROM flow_status WHERE new = 'running'",
    )
    began_while_paused = [c for c in claims if paused < c.tx_at < resumed]
    assert began_while_paused == []
    claimed_at = {(c.instance_id, c.version, c.attempt): c.tx_at for c in claims}
    starts = evidence.rows(
        engine,
        "SELECT instance_id, version, attempt, extract(epoch FROM at)::float8 AS at "
        "FROM flow_runs WHERE event = 'start'",
    )
    in_pause = [s for s in starts if paused < s.at < resumed]
    assert all(claimed_at[(s.instance_id, s.version, s.attempt)] < paused for s in in_pause)
    assert len(claims) == total
    assert [c for c in claims if c.tx_at > resumed]  # work waited through the pause
    assert len(owners(engine, Task.name)) == 3


def leader_pid(engine: Engine) -> int | None:
    """The process id of the runner holding the unexpired leadership lease."""
    found = evidence.rows(
        engine,
        "SELECT n.pid FROM gen_durable.gd_leaders l JOIN gen_durable.gd_nodes n ON n.id = l.owner "
        "WHERE l.name = 'leader' AND l.expires_at > now()",
    )
    return int(found[0].pid) if found else None


def fired_since(engine: Engine, since: float) -> int:
    """Ticks fired by cron transactions that began after ``since`` (database time)."""
    return count(
        engine,
        "SELECT count(*) FROM gen_durable.gd_cron_ticks WHERE schedule = :s "
        "AND fired_at > to_timestamp(:t)",
        s=SCHEDULE,
        t=since,
    )


def test_cron_fires_every_second_exactly_once_while_its_leaders_are_killed(
    engine: Engine, workers: RunnerProcesses
) -> None:
    """Three processes share a cron of every second; the leader is SIGKILLed three times
    (just before a tick, just after one, between two), a replacement started each time.

    Every second from the first tick to the last fired exactly once: one gd_cron_ticks row
    and one instance each (0 doubles, 0 misses); ticks due while nobody led fired late,
    once, after the hand-over.
    """
    options = ("--cron", "--leader-ttl", "1.5", "--concurrency", "2", "--lease", "5")
    workers.start_many(3, *options)
    kills: list[float] = []
    since = evidence.db_time(engine)
    for phase in (0.95, 0.05, 0.5):
        alive = {p.pid: p for p in workers.procs if p.poll() is None}

        def leading(alive: dict[int, Any] = alive, since: float = since) -> bool:
            """A live process leads and has fired since the last kill (it took over)."""
            return fired_since(engine, since) >= 1 and leader_pid(engine) in alive

        wait_until(leading)
        victim = alive[leader_pid(engine)]  # type: ignore[index]
        time.sleep((phase - evidence.db_time(engine)) % 1.0)
        since = evidence.db_time(engine)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        kills.append(since)
        workers.spawn(*options)  # a replacement; the others keep running meanwhile
    wait_until(lambda: fired_since(engine, since) >= 2)
    workers.stop_all()
    ticks = evidence.rows(
        engine,
        "SELECT extract(epoch FROM tick)::float8 AS tick, instance_id, "
        "extract(epoch FROM fired_at)::float8 AS fired FROM gen_durable.gd_cron_ticks "
        "WHERE schedule = :s ORDER BY tick",
        s=SCHEDULE,
    )
    seconds = [t.tick for t in ticks]
    assert seconds == [seconds[0] + n for n in range(len(seconds))]  # no second missed
    instances = evidence.rows(
        engine, "SELECT id FROM gen_durable.gd_instances WHERE fsm = 'flowproc.Tick'"
    )
    assert sorted(t.instance_id for t in ticks) == sorted(i.id for i in instances)  # once each
    assert seconds[0] < kills[0] and seconds[-1] > kills[-1]
    handovers = [min(t.fired for t in ticks if t.fired > k) - k for k in kills]
    print(f"cron: {len(ticks)} ticks, {len(kills)} leader kills, hand-overs (s): {handovers}")


# -- bad input: a typed error, nothing written ---------------------------------------------

TABLES = ("gd_instances", "gd_signals", "gd_queues", "gd_rate_buckets", "gd_cron_ticks")


def written(session: Session) -> list[int]:
    return [
        int(session.execute(text(f"SELECT count(*) FROM gen_durable.{t}")).scalar_one())
        for t in TABLES
    ]


@pytest.mark.parametrize(
    "expression",
    ["* * * * * * *", "* * * *", "61 * * * * *", "*/0 * * * *", "* * 31 2 *", "@reboot", None],
)
def test_a_malformed_cron_expression_is_a_validation_error(expression: Any) -> None:
    with pytest.raises(ValidationError):
        Cron(expression, Task, args={"n": 1})


@pytest.mark.parametrize("timezone", ["", "UTC+25", "../etc/passwd", "utc", None, 3])
def test_an_unknown_cron_time_zone_is_a_validation_error(timezone: Any) -> None:
    with pytest.raises(ValidationError):
        Cron("* * * * *", Task, args={"n": 1}, timezone=timezone)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((-1,), {}),
        ((0,), {}),
        ((float("nan"),), {}),
        ((float("inf"),), {}),
        ((True,), {}),
        (("10",), {}),
        ((1,), {"per": -1}),
        ((1,), {"burst": -5}),
        ((1,), {"burst": 0}),
        ((1,), {"weight": 3}),
        ((1,), {"partition": "tenant"}),
    ],
)
def test_a_negative_or_non_numeric_rate_is_a_definition_error(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(DefinitionError):
        RateLimit(*args, **kwargs)


def test_a_class_whose_rate_limit_or_priority_is_wrong_cannot_be_defined() -> None:
    with pytest.raises(DefinitionError):

        class Spelled(FSM):
            steps = ("a",)
            rate_limit = "10/s"  # type: ignore[assignment]

    with pytest.raises(DefinitionError):

        class Urgent(FSM):
            steps = ("a",)
            priority = 10


@pytest.mark.parametrize("priority", [10, -1, 99999, True, "1", 1.5])
def test_a_priority_out_of_range_raises_and_writes_nothing(session: Session, priority: Any) -> None:
    before = written(session)
    with pytest.raises(ValidationError):
        durable.insert(session, Task, args={"n": 1}, priority=priority)
    with pytest.raises(ValidationError):
        durable.insert_all(session, [Task.new(args={"n": 1}, priority=priority)])
    with pytest.raises(ValidationError):
        Cron("* * * * *", Task, args={"n": 1}, priority=priority)
    assert written(session) == before
    assert durable.insert(session, Task, args={"n": 1}, priority=9) > 0  # still usable


class Charged(Job):
    """Its only step takes ``w`` tokens of partition ``p``: both are computed at insert."""

    name = "flowtest.Charged"
    rate_limit = RateLimit(5, per=1, burst=5, partition=lambda a: a["p"], weight=lambda a: a["w"])

    def perform(self, args: Any) -> None:
        return None


@pytest.mark.parametrize(
    "args",
    [
        {"p": "a", "w": -1},
        {"p": "a", "w": 0},
        {"p": "a", "w": 6},  # more than the bucket holds: it could never run
        {"p": "a", "w": float("nan")},
        {"p": "a", "w": "heavy"},
        {"w": 1},  # the partition function fails
    ],
)
def test_a_bad_weight_or_partition_raises_at_insert_and_writes_nothing(
    session: Session, args: dict[str, Any]
) -> None:
    before = written(session)
    with pytest.raises(ValidationError):
        durable.insert(session, Charged, args=args)
    with pytest.raises(ValidationError):
        Cron("* * * * *", Charged, args=args)
    assert written(session) == before
    assert durable.insert(session, Charged, args={"p": "a", "w": 5}) > 0


def test_a_runner_refuses_what_is_not_a_schedule_and_two_schedules_of_one_name(
    shared_engine: Engine,
) -> None:
    with pytest.raises(ConfigurationError):
        Runner(shared_engine, cron=["* * * * *"])  # type: ignore[list-item]
    twice = [Cron("* * * * *", Task, args={"n": n}, name="sweep") for n in (1, 2)]
    with pytest.raises(ConfigurationError):
        Runner(shared_engine, cron=twice)
