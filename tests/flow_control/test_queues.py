"""Queues: priority then FIFO order, and pause/resume stored in the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from _support.helpers import TESTS, scalar, snapshot, wait_status
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import Job, Runner, store
from gen_durable.errors import ValidationError


class Task(Job):
    name = "q.Task"

    def perform(self, args: Any) -> Any:
        return args.get("n")


def _claim(engine: Engine, limit: int = 10) -> list[int]:
    with engine.begin() as conn:
        return [r.id for r in store.claims.claim(conn, "default", ["q.Task"], limit, "n", 30, None)]


def test_claims_follow_priority_then_fifo(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(
            s, [Task.new(args={"n": n}, priority=p) for n, p in enumerate((5, 0, 9, 0, 5))]
        )
    assert _claim(engine, 2) == [ids[1], ids[3]]  # priority 0 first, oldest first
    assert _claim(engine, 10) == [ids[0], ids[4], ids[2]]


def test_a_paused_queue_is_not_claimed_by_any_runner_until_resumed(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.pause_queue(s, "default")
        iid = durable.insert(s, Task, args={"n": 1})
    assert _claim(engine) == []  # what every runner's claim sees
    with Runner(engine, lease=5, poll_interval=0.2):
        assert _claim(engine) == []
        with Session(engine) as s, s.begin():
            durable.resume_queue(s, "default")
        done = wait_status(engine, iid, "done")
    assert done.result == 1


def test_pausing_one_queue_leaves_the_others_running(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        durable.pause_queue(s, "slow")
        held = durable.insert(s, Task, args={"n": 2}, queue="slow")
        free = durable.insert(s, Task, args={"n": 3})
    with Runner(engine, queues={"default": 2, "slow": 2}, lease=5, poll_interval=0.2):
        wait_status(engine, free, "done")
        assert snapshot(engine, held).status == "available"


def test_bad_queue_names_raise(session: Session) -> None:
    with pytest.raises(ValidationError):
        durable.pause_queue(session, "")


def test_pause_and_resume_from_the_command_line(engine: Engine, db_url: str) -> None:
    env = {**os.environ, "GEN_DURABLE_DSN": db_url}
    for command in ("pause", "resume", "pause"):
        out = subprocess.run(
            [sys.executable, "-m", "gen_durable", command, "mail"],
            env=env,
            cwd=TESTS,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
    assert scalar(engine, "SELECT paused FROM gen_durable.gd_queues WHERE name = 'mail'") is True


T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_debounce_pushes_an_unstarted_instance_back_within_max_wait(session: Session) -> None:
    opts: dict[str, Any] = {"correlation_key": "digest:7", "debounce": 10, "max_wait": 25}
    first = durable.insert(session, Task, args={"n": 1}, now=_at(0), **opts)
    assert durable.get(session, first).run_at == _at(10)
    again = durable.insert(session, Task, args={"n": 2}, now=_at(8), **opts)
    snap = durable.get(session, first)
    assert again == first and snap.run_at == _at(18) and snap.state == {"n": 1}
    durable.insert(session, Task, args={"n": 3}, now=_at(20), replace=True, **opts)
    snap = durable.get(session, first)
    assert snap.run_at == _at(25) and snap.state == {"n": 3}  # capped by max_wait


def test_debounce_leaves_a_started_instance_alone(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Task, args={"n": 1}, correlation_key="d:1", debounce=0)
    assert _claim(engine) == [iid]
    with Session(engine) as s, s.begin():
        again = durable.insert(s, Task, args={"n": 2}, correlation_key="d:1", debounce=60)
    snap = snapshot(engine, iid)
    assert again == iid and snap.status == "running" and snap.state == {"n": 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"debounce": 5},  # no key
        {"debounce": -1, "correlation_key": "k"},
        {"debounce": 5, "max_wait": 1, "correlation_key": "k"},
        {"debounce": 5, "delay": 3, "correlation_key": "k"},
    ],
)
def test_bad_debounce_options_raise(session: Session, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        durable.insert(session, Task, args={}, **kwargs)


def test_why_says_the_queue_is_paused(session: Session) -> None:
    durable.pause_queue(session, "default")
    iid = durable.insert(session, Task, args={"n": 1})
    why = durable.explain(session, iid)
    assert why.reason == "queue_paused" and "paused" in why.summary
