"""Helpers shared by the tests: waiting for states, counting rows, runner processes, paths."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable.domain import definitions as fsm
from gen_durable.domain import registry
from gen_durable.domain.decide import Transition

T = TypeVar("T")
# tests/ (on sys.path: pyproject's pythonpath; the PYTHONPATH of the subprocesses below) and
# the checkout (README.md, docs/, examples/).
TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def snapshot(engine: Engine, target: int | str) -> durable.InstanceSnapshot:
    """``get()`` in a short transaction of its own."""
    with Session(engine) as s:
        return durable.get(s, target)


def wait_status(
    engine: Engine, target: int | str, *statuses: str, timeout: float = 20.0
) -> durable.InstanceSnapshot:
    """Wait until the instance reaches one of ``statuses``; return its snapshot."""
    wanted = set(statuses) or {"done"}

    def reached() -> durable.InstanceSnapshot | None:
        snap = snapshot(engine, target)
        return snap if snap.status in wanted else None

    try:
        return wait_until(reached, timeout)
    except AssertionError:
        raise AssertionError(
            f"instance {target} never reached {sorted(wanted)}: {snapshot(engine, target)}"
        ) from None


def scalar(engine: Engine, sql: str, **params: object) -> object:
    """One value from a test-only query."""
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def count(engine: Engine, sql: str, **params: object) -> int:
    """An integer (a ``count(*)``) from a test-only query."""
    value = scalar(engine, sql, **params)
    assert isinstance(value, int), f"not an integer: {value!r}"
    return value


def forget_classes(module: str) -> None:
    """Unregister the FSM and Job classes defined in ``module`` (for tests that define many)."""
    for name, cls in fsm.registered().items():
        if cls.__module__ == module:
            registry.forget(name)


def backend_waiting_on_lock(engine: Engine, timeout: float = 10.0) -> None:
    """Wait until some backend of this database is blocked on a lock (forces interleavings)."""

    def blocked() -> bool:
        n = scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        return bool(n)

    wait_until(blocked, timeout, interval=0.01)


class RunnerProcesses:
    """Starts runner processes (``python -m MODULE URL ...``) on one database and kills them."""

    def __init__(self, module: str, url: str) -> None:
        self.module = module
        self.url = url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one; return once it printed ``ready`` (its Runner is about to run)."""
        proc = self.spawn(*args, env=env)
        self.wait_ready(proc)
        return proc

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start one without waiting for it (see :meth:`wait_ready`)."""
        proc = subprocess.Popen(
            [sys.executable, "-m", self.module, self.url, *args],
            env={**os.environ, "PYTHONPATH": str(TESTS), **(env or {})},
            stdout=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def wait_ready(proc: subprocess.Popen[bytes]) -> None:
        """Block until ``proc`` printed ``ready``."""
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"

    def start_many(
        self, count: int, *args: str, env: dict[str, str] | None = None
    ) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` side by side (their start-ups overlap); return once all are ready."""
        procs = [self.spawn(*args, env=env) for _ in range(count)]
        for proc in procs:
            self.wait_ready(proc)
        return procs

    def stop_all(self) -> None:
        """Kill what still runs and reap every process."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def transition_for(row: Any, **fields: Any) -> Transition:
    """A transition for a row claimed by hand (``store.claims.claim``): ``done`` unless
    ``fields`` say otherwise."""
    record: dict[str, Any] = {
        "instance_id": row.id,
        "lease_token": row.lease_token,
        "version": row.version,
        "kind": "done",
        "status": "done",
        "step": row.step,
        "state": None,
    }
    return Transition(**(record | fields))


def gen_durable_cli(
    *args: str,
    dsn: str | None = None,
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m gen_durable ARGS`` in a subprocess (the real entry point), with
    ``GEN_DURABLE_DSN`` set to ``dsn`` or unset, ``GEN_DURABLE_SCHEMA`` unset, then
    ``env`` added, tests/ on its path and as its cwd."""
    unset = ("GEN_DURABLE_DSN", "GEN_DURABLE_SCHEMA")
    full = {k: v for k, v in os.environ.items() if k not in unset}
    full["PYTHONPATH"] = str(TESTS)
    if dsn is not None:
        full["GEN_DURABLE_DSN"] = dsn
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gen_durable", *args],
        env=full,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
