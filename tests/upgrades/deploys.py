"""Deploying one version of the upgrade tests' FSM in this process, as a new release would."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

from _support.helpers import TESTS
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable.domain import registry

NAMES = ("upg.Signup",)


def deploy(version: int) -> Any:
    """The ``Signup`` class of ``upgrades.signup_v<version>``, registered in place of
    whatever version was before (the modules share their registry names)."""
    for name in NAMES:
        registry.forget(name)
    module: ModuleType = importlib.import_module(f"upgrades.signup_v{version}")
    module = importlib.reload(module)
    return module.Signup


def row(engine: Engine, instance_id: int) -> Any:
    """The columns of one instance the upgrade tests look at."""
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT status, step, state, state_version, run_at, error, attempt "
                "FROM gen_durable.gd_instances WHERE id = :i"
            ),
            {"i": instance_id},
        ).one()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gen_durable ARGS --dsn URL`` (the real entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "gen_durable", *args, "--dsn", url],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_json(url: str, *args: str) -> tuple[int, Any]:
    """A command run with ``--json``: its exit code and its parsed output."""
    done = cli(url, *args, "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def insert(engine: Engine, cls: type, email: str, **more: str) -> int:
    """A row of ``cls`` (a Signup version) for ``email``."""
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, state={"email": email, **more})


def approve(engine: Engine, instance_id: int) -> None:
    """The signal a Signup awaits."""
    with Session(engine) as s, s.begin():
        durable.signal(s, instance_id, "approve")
