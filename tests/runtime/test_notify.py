"""Wake-ups: LISTEN/NOTIFY makes work start without waiting for a poll; reconnects recover."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from _support.helpers import wait_status, wait_until
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Runner, step, store

SLOW_POLL = 60.0
"""A poll interval far longer than the tests' deadlines: only a notification can wake."""


class Ping(FSM):
    name = "notify.Ping"

    @step
    def ping(self, ctx: durable.Context) -> Done:
        return Done("pong")


def _insert(engine: Engine) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, Ping)


def _listener_backends(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query ILIKE 'LISTEN%'"
                )
            ).scalar_one()
        )


def test_an_insert_wakes_an_idle_runner_through_notify(engine: Engine) -> None:
    with Runner(engine, lease=5, poll_interval=SLOW_POLL) as runner:
        assert runner.listener is not None
        assert runner.listener.connected.wait(10)
        time.sleep(0.3)  # the first poll after start has passed; the runner is idle
        iid = _insert(engine)
        done = wait_status(engine, iid, "done", timeout=10)
    assert done.result == "pong"


def test_the_listener_reconnects_after_its_backend_is_terminated(engine: Engine) -> None:
    with Runner(engine, lease=5, poll_interval=SLOW_POLL) as runner:
        assert runner.listener is not None and runner.listener.connected.wait(10)
        wait_until(lambda: _listener_backends(engine) == 1)
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                )
            )
        wait_until(
            lambda: _listener_backends(engine) == 0 or not runner.listener.connected.is_set()
        )
        wait_until(runner.listener.connected.is_set, timeout=15)
        wait_until(lambda: _listener_backends(engine) == 1, timeout=15)
        time.sleep(0.3)
        iid = _insert(engine)
        wait_status(engine, iid, "done", timeout=10)


def test_polling_alone_runs_work_when_listen_is_off(engine: Engine) -> None:
    iid = _insert(engine)
    with Runner(engine, lease=5, poll_interval=0.2, listen=False) as runner:
        assert runner.listener is None
        time.sleep(0.5)
        late = _insert(engine)
        wait_status(engine, iid, "done", timeout=10)
        wait_status(engine, late, "done", timeout=10)


def test_an_insert_is_one_statement_that_wakes_its_queue_only_when_it_writes(
    engine: Engine,
) -> None:
    """The single insert of a web request sends its wake-up in the same statement; an
    insert that resolves to a live instance's correlation key wakes nobody."""
    listener = psycopg.connect(
        engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )
    try:
        store.notify.listen(listener)
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", seen)
        try:
            with Session(engine) as s, s.begin():
                first = durable.insert(s, Ping, correlation_key="order:1")
            made = statements[:]
            with Session(engine) as s, s.begin():
                again = durable.insert(s, Ping, correlation_key="order:1")
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert again == first
        assert len(made) == 1 and "pg_notify" in made[0], made
        woken = [n.payload for n in listener.notifies(timeout=1.0, stop_after=2)]
    finally:
        listener.close()
    assert woken == ["default"]
