"""Crash recovery with real processes: SIGKILL mid-step, and a step that kills its worker."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest
from _support.helpers import RunnerProcesses, scalar, snapshot, wait_status, wait_until
from procs.worker import Consumer, Poison, Slow, setup
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable


class Workers(RunnerProcesses):
    """Runner processes of procs.worker, whose slow step takes ``work_seconds``."""

    def __init__(self, url: str) -> None:
        super().__init__("procs.worker", url)

    def start(self, work_seconds: float = 3.0) -> subprocess.Popen[bytes]:  # type: ignore[override]
        return super().start("--lease", "1.5", env={"GD_TEST_WORK_SECONDS": str(work_seconds)})


@pytest.fixture
def workers(db_url: str, engine: Engine) -> Iterator[Workers]:
    setup(engine)
    w = Workers(db_url)
    yield w
    w.stop_all()


def runs(engine: Engine, iid: int, step: str) -> int:
    return int(
        scalar(  # type: ignore[arg-type]
            engine,
            "SELECT count(*) FROM gd_test_runs WHERE instance_id = :i AND step = :s",
            i=iid,
            s=step,
        )
    )


def test_sigkill_mid_step_finishes_on_another_runner_with_one_commit_per_step(
    engine: Engine, workers: Workers
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Slow)
    first = workers.start(work_seconds=3.0)
    wait_until(lambda: runs(engine, iid, "work") == 1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    workers.start(work_seconds=0.1)
    done = wait_status(engine, iid, "done", timeout=30)
    assert done.result == "finished"
    assert runs(engine, iid, "work") == 2  # the killed step ran again (at-least-once)
    effects = scalar(
        engine,
        "SELECT string_agg(step, ',' ORDER BY version) FROM gd_test_effects WHERE instance_id = :i",
        i=iid,
    )
    assert effects == "begin,work,finish"  # each transition committed exactly once
    assert done.attempt == 0 and done.version == 3


def test_a_step_that_kills_its_worker_fails_after_exactly_max_attempts_runs(
    engine: Engine, workers: Workers
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Poison)
    for _ in range(Poison.max_attempts + 3):
        proc = workers.start()
        try:
            proc.wait(15)  # it dies by its own hand as soon as it runs the step
        except subprocess.TimeoutExpired:
            break  # nothing left to run: the instance has failed
        if snapshot(engine, iid).status == "failed":
            break
    survivor = workers.start()
    failed = wait_status(engine, iid, "failed", timeout=15)
    assert survivor.poll() is None
    assert runs(engine, iid, "explode") == Poison.max_attempts
    assert failed.error["type"] == "LeaseExpired"
    assert failed.attempt == Poison.max_attempts


def test_a_signal_pack_is_redelivered_after_sigkill_and_consumed_once(
    engine: Engine, workers: Workers
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Consumer)
        for n in range(3):
            durable.signal(s, iid, "item", n)
    first = workers.start(work_seconds=3.0)
    wait_until(lambda: runs(engine, iid, "0,1,2") == 1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    workers.start(work_seconds=0.1)
    done = wait_status(engine, iid, "done", timeout=30)
    assert done.result == [0, 1, 2]
    assert runs(engine, iid, "0,1,2") == 2  # delivered again, whole, to the next attempt
    assert scalar(engine, "SELECT count(*) FROM gd_test_effects WHERE instance_id = :i", i=iid) == 1
    versions = {s.consumed_at is not None for s in done.signals}
    assert versions == {True}
    assert (
        scalar(
            engine,
            "SELECT count(DISTINCT consumed_version) FROM gen_durable.gd_signals "
            "WHERE instance_id = :i",
            i=iid,
        )
        == 1
    )


def test_sigterm_stops_a_runner_gracefully_and_releases_what_still_runs(
    engine: Engine, workers: Workers
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Slow)
    first = workers.start(work_seconds=30.0)  # far longer than the 0.5 s grace
    wait_until(lambda: runs(engine, iid, "work") == 1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(15) == 0  # a clean exit, not a kill
    released = snapshot(engine, iid)
    assert (released.status, released.step, released.attempt) == ("available", "work", 0)
    workers.start(work_seconds=0.1)
    done = wait_status(engine, iid, "done", timeout=30)
    assert done.result == "finished"
    assert scalar(engine, "SELECT count(*) FROM gd_test_effects WHERE instance_id = :i", i=iid) == 3
