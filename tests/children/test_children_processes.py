"""Child fan-out on several runner processes (procs.fanout_worker): joins once, SIGKILL.

The parent's join step writes ``gd_test_joins`` through ``ctx.session``, so counting rows
counts committed joins.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from _support.children import children_rows, insert, pending
from _support.helpers import (
    RunnerProcesses,
    backend_waiting_on_lock,
    scalar,
    wait_status,
    wait_until,
)
from procs.fanout_worker import setup as setup_fanout
from sqlalchemy import Engine, text


class Workers(RunnerProcesses):
    """Fan-out runner processes (procs.fanout_worker) on one database."""

    def __init__(self, url: str) -> None:
        super().__init__("procs.fanout_worker", url)

    def start(self, concurrency: int = 8, lease: float = 1.5) -> subprocess.Popen[bytes]:  # type: ignore[override]
        return super().start("--lease", str(lease), "--concurrency", str(concurrency))


@pytest.fixture
def workers(db_url: str, engine: Engine) -> Iterator[Workers]:
    setup_fanout(engine)
    w = Workers(db_url)
    yield w
    w.stop_all()


def fan_runs(engine: Engine, step: str) -> int:
    return int(scalar(engine, "SELECT count(*) FROM gd_test_runs WHERE step = :s", s=step))  # type: ignore[arg-type]


def assert_joined_once(engine: Engine, iid: int, n: int) -> None:
    done = wait_status(engine, iid, "done", timeout=60)
    assert done.result == {"children": n, "sum": sum(range(n))}
    joined = scalar(engine, "SELECT count(*) FROM gd_test_joins WHERE instance_id = :i", i=iid)
    assert joined == 1
    assert fan_runs(engine, "join") == 1
    assert pending(engine, iid) == 0
    kids = children_rows(engine, iid)
    assert len(kids) == n and all(k[2] == "done" for k in kids)
    effects = scalar(  # each child's step committed exactly once
        engine, "SELECT count(*) FROM gd_test_effects WHERE step = 'perform'"
    )
    assert effects == n


def test_many_children_finishing_at_once_on_several_processes_join_once(
    engine: Engine, workers: Workers
) -> None:
    from procs.fanout_worker import Fan

    for _ in range(3):
        workers.start(concurrency=8)
    n = 240
    iid = insert(engine, Fan, state={"n": n, "at": time.time() + 3})
    assert_joined_once(engine, iid, n)
    pids = scalar(engine, "SELECT count(DISTINCT pid) FROM gd_test_runs WHERE step = 'perform'")
    assert pids == 3


def test_sigkill_during_the_spawn_commit_leaves_no_children_and_the_rerun_spawns_once(
    engine: Engine, workers: Workers
) -> None:
    from procs.fanout_worker import Fan

    n = 20
    iid = insert(engine, Fan, state={"n": n, "linger": 1.0})
    with engine.connect() as blocker:
        blocker.begin()
        first = workers.start(concurrency=2)
        wait_until(lambda: fan_runs(engine, "spawn") == 1)
        blocker.execute(  # the Spawn's commit now waits for this row lock
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": iid}
        )
        backend_waiting_on_lock(engine)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        blocker.rollback()
    assert children_rows(engine, iid) == []
    workers.start(concurrency=4)
    assert_joined_once(engine, iid, n)
    assert fan_runs(engine, "spawn") == 2  # the killed Spawn ran again, and spawned once


def test_sigkill_during_child_completions_joins_once(engine: Engine, workers: Workers) -> None:
    from procs.fanout_worker import Fan

    n = 30
    iid = insert(engine, Fan, state={"n": n, "sleep": 0.4})
    first = workers.start(concurrency=6)
    wait_until(lambda: len(children_rows(engine, iid)) == n)
    wait_until(lambda: sum(k[2] == "done" for k in children_rows(engine, iid)) >= 6)
    with engine.connect() as blocker:
        blocker.begin()
        blocker.execute(  # finishing children now wait for their parent's row lock
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": iid}
        )
        backend_waiting_on_lock(engine, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        blocker.rollback()
    before = sum(k[2] == "done" for k in children_rows(engine, iid))
    assert before < n
    assert pending(engine, iid) == n - before  # nothing counted that did not commit
    workers.start(concurrency=6)
    assert_joined_once(engine, iid, n)
    assert fan_runs(engine, "perform") > n  # the killed ones ran again
