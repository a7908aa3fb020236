"""Runner processes to kill, a workload to run, and the invariants checked after the chaos."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from chaos import flows

TESTS = Path(__file__).resolve().parent.parent
FULL = os.environ.get("GD_CHAOS", "fast") == "full"
"""``GD_CHAOS=full`` (``make chaos``) runs the long versions with bigger counts."""


def tier(fast: Any, full: Any) -> Any:
    """The fast tier's value, or the full tier's under ``GD_CHAOS=full``."""
    return full if FULL else fast


WAIT = tier(180.0, 900.0)
"""Generous bound for "everything finishes" (a failure, never a figure)."""


def wait_for(
    predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll until ``predicate`` is truthy; database errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server may be restarting
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout:.0f}s: {what or predicate}") from (
                last_error
            )
        time.sleep(interval)


def query(bind: Engine | Connection, sql: str, **params: Any) -> list[Any]:
    if isinstance(bind, Connection):  # within the caller's transaction (its snapshot)
        return list(bind.execute(text(sql), params).all())
    with bind.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def value(bind: Engine | Connection, sql: str, **params: Any) -> Any:
    if isinstance(bind, Connection):
        return bind.execute(text(sql), params).scalar()
    with bind.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def prepare(engine: Engine) -> None:
    """Create the evidence tables and triggers."""
    with engine.begin() as conn:
        conn.exec_driver_sql(flows.SETUP)


# -- runner processes ------------------------------------------------------------------------


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    faults: str | None
    ready: threading.Event = field(default_factory=threading.Event)
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            self.lines.append(line)
            if line == "ready":
                self.ready.set()

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not self.ready.wait(timeout):
            raise AssertionError(f"runner did not start:\n{self.log.read_text()[-3000:]}")


@dataclass
class Cluster:
    """Starts runner processes on one database, kills and stops them."""

    url: str
    logs: Path
    lease: float = 3.0
    concurrency: int = 4
    options: Sequence[str] = ()
    workers: list[Worker] = field(default_factory=list)
    kills: int = 0
    module: str = "chaos.worker"
    """The runner program (``python -m MODULE URL --lease ... --concurrency ...``)."""

    def start(
        self,
        faults: str | None = None,
        *,
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
        lease: float | None = None,
        wait: bool = True,
    ) -> Worker:
        """Start a runner process; with ``wait``, return once it is ready."""
        full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
        full_env.pop("GEN_DURABLE_FAULTS", None)
        if faults:
            full_env["GEN_DURABLE_FAULTS"] = faults
        log = self.logs / f"worker-{len(self.workers)}.log"
        args = [
            sys.executable,
            "-m",
            self.module,
            self.url,
            "--lease",
            str(lease or self.lease),
            "--concurrency",
            str(self.concurrency),
            *self.options,
            *options,
        ]
        with log.open("wb") as err:
            proc = subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=err)
        worker = Worker(proc, log, faults)
        self.workers.append(worker)
        threading.Thread(target=worker.read, daemon=True, name="chaos-stdout").start()
        if wait:
            worker.wait_ready()
        return worker

    def start_many(self, count: int, faults: str | None = None, **kwargs: Any) -> list[Worker]:
        """Start ``count`` runners side by side; return once all are ready."""
        started = [self.start(faults, wait=False, **kwargs) for _ in range(count)]
        for worker in started:
            worker.wait_ready()
        return started

    def alive(self) -> list[Worker]:
        """Runners that are up and running (started, not dead)."""
        return [w for w in self.workers if w.alive() and w.ready.is_set()]

    def kill(self, worker: Worker) -> None:
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(30)
        self.kills += 1

    def stop(self, worker: Worker) -> dict[str, Any]:
        """SIGTERM, wait for a clean exit; returns the fault counts it printed."""
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
        time.sleep(0.1)  # let the reader thread take the last line
        for line in worker.lines:
            if line.startswith("faults "):
                return dict(json.loads(line[len("faults ") :]))
        return {}

    def send(self, keys: Sequence[str], faults: str | None = None) -> int:
        """Signal ``go`` to ``keys`` from a client process; returns its exit code."""
        env = {**os.environ, "PYTHONPATH": str(TESTS)}
        env.pop("GEN_DURABLE_FAULTS", None)
        if faults:
            env["GEN_DURABLE_FAULTS"] = faults
        args = [sys.executable, "-m", "chaos.worker", self.url]
        for key in keys:
            args += ["--send", key]
        return subprocess.run(args, env=env, timeout=120, capture_output=True).returncode

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(30)


# -- workload ------------------------------------------------------------------------------


@dataclass
class Workload:
    """Flows inserted by a test: their ids by ordinal, and what each is meant to do."""

    ids: dict[int, int] = field(default_factory=dict)
    wait: set[int] = field(default_factory=set)
    spawn: dict[int, int] = field(default_factory=dict)
    grouped: bool = True

    def add(self, engine: Engine, count: int, **options: Any) -> list[int]:
        """Insert ``count`` more flows (see :func:`flows.specs`); returns their ids."""
        first = len(self.ids)
        specs = flows.specs(first, count, **options)
        made: list[int] = []
        for start in range(0, len(specs), 500):
            with Session(engine) as s, s.begin():
                made += durable.insert_all(s, specs[start : start + 500])
        for n, (spec, iid) in enumerate(zip(specs, made, strict=True), start=first):
            self.ids[n] = iid
            state = spec.state
            if state["wait"]:
                self.wait.add(n)
            if state["spawn"]:
                self.spawn[n] = state["spawn"]
            self.grouped = state["grouped"]
        return made

    def keys(self, ordinals: Sequence[int] | set[int]) -> list[str]:
        return [f"chaos:{n}" for n in sorted(ordinals)]

    @property
    def steps(self) -> int:
        return 5 * len(self.ids) + sum(self.spawn.values())


def send_signals(engine: Engine, keys: Sequence[str], spread: float = 0.0) -> int:
    """Signal ``go`` to each key (retrying through outages); returns how many were sent."""
    sent = 0
    for key in keys:
        n = int(key.rsplit(":", 1)[1])

        def deliver(key: str = key, n: int = n) -> bool:
            with Session(engine) as s, s.begin():
                durable.signal(s, key, "go", {"n": n}, idempotency_key=f"go:{n}")
            return True

        wait_for(deliver, what=f"signal to {key}")
        sent += 1
        if spread:
            time.sleep(random.uniform(0, spread))
    return sent


class Sender(threading.Thread):
    """Sends the workload's signals in the background, at random moments."""

    def __init__(self, engine: Engine, keys: Sequence[str], spread: float) -> None:
        super().__init__(daemon=True, name="chaos-sender")
        self.engine = engine
        self.keys = list(keys)
        random.shuffle(self.keys)
        self.spread = spread
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sent = send_signals(self.engine, self.keys, self.spread)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> int:
        self.join(WAIT)
        if self.error is not None:
            raise self.error
        return self.sent


def progress(engine: Engine) -> int:
    """Transitions committed by flows so far (their versions add up)."""
    return int(
        value(
            engine,
            "SELECT coalesce(sum(version), 0) FROM gen_durable.gd_instances "
            "WHERE fsm = 'chaos.Flow'",
        )
    )


def effects(engine: Engine) -> int:
    """Steps committed through ``ctx.session`` so far (survives garbage collection)."""
    return int(value(engine, "SELECT count(*) FROM chaos_effects"))


def unfinished(engine: Engine) -> int:
    return int(
        value(
            engine,
            "SELECT count(*) FROM gen_durable.gd_instances "
            "WHERE fsm IN ('chaos.Flow', 'chaos.Leaf') AND finished_at IS NULL",
        )
    )


def wait_finished(engine: Engine, workload: Workload, timeout: float = WAIT) -> None:
    """Wait until every flow (and child) finished — or fail with where they are stuck."""

    def done() -> bool:
        flows_done = value(
            engine,
            "SELECT count(*) FROM chaos_effects WHERE step = 's4'",
        )
        return unfinished(engine) == 0 and flows_done == len(workload.ids)

    try:
        wait_for(done, timeout, interval=0.25, what="every instance finished")
    except AssertionError:
        stuck = query(
            engine,
            "SELECT status, step, count(*) FROM gen_durable.gd_instances "
            "WHERE finished_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2",
        )
        raise AssertionError(f"instances never finished: {stuck}") from None


def kill_during(
    engine: Engine,
    cluster: Cluster,
    workload: Workload | None,
    kills: int,
    *,
    replace: Callable[[], Worker] | None = None,
    measure: Callable[[Engine], int] | None = None,
    total: int | None = None,
) -> list[float]:
    """SIGKILL a random live runner each time another 1/(kills+1) of the work committed,
    and start a replacement; returns the progress fraction at each kill.

    Progress is ``measure`` out of ``total`` (by default: the workload's flow transitions).
    """
    measure = measure or progress
    if total is None:
        assert workload is not None, "give the workload or the total"
        total = 5 * len(workload.ids)
    at: list[float] = []
    for k in range(1, kills + 1):
        target = total * k // (kills + 1)
        wait_for(lambda target=target: measure(engine) >= target, what=f"progress {target}")
        live = wait_for(cluster.alive, what="a live runner")
        cluster.kill(random.choice(live))
        at.append(measure(engine) / total)
        if replace is not None:
            replace()
        else:
            cluster.start(wait=False)
    return at


# -- invariants ----------------------------------------------------------------------------


@dataclass
class Verdict:
    """What the invariants found; ``figures`` are published, ``problems`` fail the test."""

    figures: dict[str, Any]
    problems: list[str]

    def assert_ok(self) -> None:
        assert not self.problems, "\n".join(self.problems[:30])


def verify(engine: Engine, workload: Workload, *, collected: bool = False) -> Verdict:
    """Check every invariant of the suite over what the database recorded.

    - lost: every flow (and child) finished ``done``;
    - double commits: each transition committed once: the trail of each flow holds its
      five versions once each, in order, and where a step wrote through ``ctx.session``
      the effect row belongs to the very run the trail names (same attempt and process);
    - re-runs: a (instance, version) ran again only after a claim of it ended without
      its transition: lease expired, released, or a failed attempt committed;
    - fencing: no run whose lease the reaper took back ever committed;
    - signals: each awaiting flow consumed exactly one signal, its own, once;
    - children: each Spawn inserted its children once and its parent saw them all done.

    With ``collected`` (GC ran with zero retention), finished rows may be gone: the
    evidence tables stand in for them, and deleted rows must have been finished.
    """
    # One snapshot for every read: GC keeps running while this reads (zero retention), and
    # an instance read as present must be read with its signals, not without them.
    snapshot = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with snapshot as conn, conn.begin():
        return _verify(conn, workload, collected)


def _verify(conn: Connection, workload: Workload, collected: bool) -> Verdict:
    problems: list[str] = []
    ids = workload.ids
    by_id = {iid: n for n, iid in ids.items()}
    effects = {
        (r.instance_id, r.version): r
        for r in query(
            conn, "SELECT instance_id, version, step, attempt, pid, info FROM chaos_effects"
        )
    }
    rows = {
        r.id: r
        for r in query(
            conn,
            "SELECT id, fsm, status, version, state, parent_id FROM gen_durable.gd_instances "
            "WHERE fsm IN ('chaos.Flow', 'chaos.Leaf')",
        )
    }
    deleted = {
        r.instance_id: r
        for r in query(
            conn,
            "SELECT instance_id, fsm, status, finished, parent_unfinished FROM chaos_deleted",
        )
    }
    if deleted and not collected:
        problems.append(f"{len(deleted)} instances were deleted")

    lost = 0
    double = 0
    committed_runs: set[tuple[int, int, int]] = set()
    session_steps = {"s0", "s2", "s4"} if workload.grouped else set(flows.STEPS)
    for n, iid in ids.items():
        row = rows.get(iid)
        if row is None:
            gone = deleted.get(iid)
            if gone is None or gone.status != "done":
                lost += 1
                problems.append(f"flow {n} ({iid}) vanished: {gone}")
            for v, step in enumerate(flows.STEPS):
                effect = effects.get((iid, v))
                if effect is None or effect.step != step:
                    lost += 1
                    problems.append(f"flow {n} ({iid}) has no effect for {step}: {effect}")
                else:
                    committed_runs.add((iid, v, effect.attempt))
            continue
        if row.status != "done" or row.version != 5:
            lost += 1
            problems.append(f"flow {n} ({iid}) ended {row.status} at version {row.version}")
            continue
        trail = row.state["trail"]
        versions = [int(t.split(":")[1]) for t in trail]
        if versions != [0, 1, 2, 3, 4] or [t.split(":")[0] for t in trail] != list(flows.STEPS):
            double += 1
            problems.append(f"flow {n} ({iid}) trail is {trail}")
            continue
        for entry in trail:
            step, v, attempt, pid = entry.split(":")
            committed_runs.add((iid, int(v), int(attempt)))
            if step in session_steps:
                effect = effects.get((iid, int(v)))
                if effect is None or (effect.attempt, effect.pid) != (int(attempt), int(pid)):
                    double += 1
                    problems.append(
                        f"flow {n} ({iid}) step {step}: trail {entry}, session effect {effect}"
                    )

    # Signals: one per awaiting flow, its own, consumed once by the step after the Await.
    signals = query(
        conn,
        "SELECT instance_id, payload, consumed_at IS NOT NULL AS consumed, consumed_version "
        "FROM gen_durable.gd_signals WHERE name = 'go'",
    )
    per_instance: dict[int, list[Any]] = defaultdict(list)
    for s in signals:
        per_instance[s.instance_id].append(s)
    bad_signals = 0
    for n in workload.wait:
        iid = ids[n]
        effect = effects.get((iid, 2))
        pack = effect.info if effect is not None else None
        if pack is None or [p["payload"] for p in pack] != [{"n": n}]:
            bad_signals += 1
            problems.append(f"flow {n} ({iid}) took the pack {pack}")
        stored = per_instance.get(iid, [])
        if iid in rows and (
            len(stored) != 1 or not stored[0].consumed or stored[0].consumed_version != 3
        ):
            bad_signals += 1
            problems.append(f"flow {n} ({iid}) has signals {stored}")
    for iid, stored in per_instance.items():
        if by_id.get(iid) not in workload.wait:
            bad_signals += 1
            problems.append(f"instance {iid} got signals it never awaited: {stored}")

    # Children: spawned once, all done, seen done by their parent.
    leaves = [r for r in rows.values() if r.fsm == "chaos.Leaf"]
    leaf_parents = Counter(r.parent_id for r in leaves)
    deleted_leaves = Counter(r.instance_id for r in deleted.values() if r.fsm == "chaos.Leaf")
    bad_children = 0
    for n, count in workload.spawn.items():
        iid = ids[n]
        effect = effects.get((iid, 4))
        seen = effect.info if effect is not None else None
        if seen is None or len(seen) != count or {c["status"] for c in seen} != {"done"}:
            bad_children += 1
            problems.append(f"flow {n} ({iid}) saw children {seen}")
        if not collected and leaf_parents.get(iid, 0) != count:
            bad_children += 1
            problems.append(f"flow {n} ({iid}) has {leaf_parents.get(iid, 0)} children")
    for leaf in leaves:
        if leaf.status != "done" or (leaf.id, 0) not in effects:
            lost += 1
            problems.append(f"child {leaf.id} ended {leaf.status}")
        elif (leaf.id, 0) in effects:
            committed_runs.add((leaf.id, 0, effects[(leaf.id, 0)].attempt))
    expected_children = sum(workload.spawn.values())
    children_seen = len(leaves) + len(deleted_leaves)
    if children_seen != expected_children:
        bad_children += 1
        problems.append(f"{children_seen} children exist, {expected_children} were spawned")

    # Re-runs only after a claim ended without a landed transition; none of those commits.
    runs = Counter(
        (r.instance_id, r.version)
        for r in query(conn, "SELECT instance_id, version FROM chaos_runs")
    )
    exits = query(
        conn,
        "SELECT instance_id, version, attempt, reaped, released, error_type FROM chaos_exits",
    )
    exits_per = Counter((e.instance_id, e.version) for e in exits)
    unexplained = 0
    for key, count in runs.items():
        if count > 1 + exits_per.get(key, 0):
            unexplained += 1
            problems.append(f"{key} ran {count} times after {exits_per.get(key, 0)} exits")
    reaped = {(e.instance_id, e.version, e.attempt) for e in exits if e.reaped}
    zombie_commits = committed_runs & reaped
    for item in sorted(zombie_commits):
        problems.append(f"the run {item} committed after its lease was reaped")

    # GC: only finished instances, never a child of an unfinished parent, never a signal
    # of a live instance.
    gc_violations = 0
    if collected:
        for r in deleted.values():
            if not r.finished or r.parent_unfinished:
                gc_violations += 1
                problems.append(f"GC deleted {r}")
        # In verify's one snapshot, like every read here: a signal deleted with its
        # instance after ``deleted`` was read cannot look orphaned.
        orphans = query(
            conn,
            "SELECT s.signal_id, s.instance_id FROM chaos_deleted_signals s "
            "LEFT JOIN chaos_deleted d USING (instance_id) WHERE d.instance_id IS NULL",
        )
        for s in orphans:
            gc_violations += 1
            problems.append(f"GC deleted signal {s.signal_id} of live {s.instance_id}")

    total_runs = sum(runs.values())
    figures = {
        "instances": len(ids),
        "children": expected_children,
        "steps": workload.steps,
        "runs": total_runs,
        "re_runs": total_runs - len(runs),
        "lease_expiries": sum(1 for e in exits if e.reaped),
        "released": sum(1 for e in exits if e.released),
        "failed_attempts": sum(1 for e in exits if not e.reaped and not e.released),
        "fenced_reported": int(value(conn, "SELECT count(*) FROM chaos_fenced")),
        "signals": len(workload.wait),
        "lost": lost,
        "double_commits": double + len(zombie_commits),
        "bad_signals": bad_signals,
        "bad_children": bad_children,
        "unexplained_re_runs": unexplained,
    }
    if collected:
        figures["gc_deleted"] = len(deleted)
        figures["gc_violations"] = gc_violations
    return Verdict(figures, problems)


def worst_pickup(engine: Engine, ids: Sequence[int]) -> dict[str, float]:
    """Seconds from each insert's commit to its first step's first run (database clock)."""
    rows = query(
        engine,
        "SELECT extract(epoch FROM min(r.at) - i.created_at) AS delay "
        "FROM gen_durable.gd_instances i JOIN chaos_runs r ON r.instance_id = i.id "
        "WHERE i.id = ANY(:ids) AND r.version = 0 GROUP BY i.id, i.created_at",
        ids=list(ids),
    )
    delays = sorted(float(r.delay) for r in rows)
    if not delays:
        return {}
    return {
        "pickup_p50_s": round(delays[len(delays) // 2], 3),
        "pickup_p99_s": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))], 3),
        "pickup_worst_s": round(delays[-1], 3),
    }


def step_gaps(engine: Engine, workload: Workload) -> float:
    """The worst wait between one step's last run and its successor's first (seconds),
    over the flows that neither await a signal nor spawn children."""
    plain = [iid for n, iid in workload.ids.items() if n not in workload.wait | set(workload.spawn)]
    return round(
        float(
            value(
                engine,
                "WITH per AS (SELECT instance_id, version, min(at) AS first, max(at) AS last "
                "FROM chaos_runs WHERE instance_id = ANY(:ids) GROUP BY 1, 2) "
                "SELECT coalesce(max(extract(epoch FROM b.first - a.last)), 0) FROM per a "
                "JOIN per b ON b.instance_id = a.instance_id AND b.version = a.version + 1",
                ids=plain,
            )
        ),
        3,
    )
