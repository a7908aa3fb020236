"""Upgrading gen_durable itself: its schema changes are expand/contract, so a runner of
the previous release (its code checked out in a git worktree) and a runner of this one
work side by side against one database migrated by this release; ``migrate`` names the
phase of each revision it applies."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from _support.helpers import ROOT, RunnerProcesses, wait_until
from deploys import cli, row
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done

PREVIOUS = "d9b2884"
"""The last commit before this release's first migration (its revisions end at 0012)."""

RUNNER = textwrap.dedent(
    """
    import os, sys
    from sqlalchemy import create_engine
    import gen_durable as durable
    from gen_durable import FSM, Await, Done

    class Pair(FSM):
        name = "lib.Pair"
        steps = ("start", "finish")

        def start(self, ctx):
            return Await("go", then="finish")

        def finish(self, ctx):
            return Done({"library": os.path.dirname(durable.__file__)})

    engine = create_engine(sys.argv[1], pool_size=10)
    runner = durable.Runner(
        engine, queues={sys.argv[2]: 2}, poll_interval=0.2, grace=0.5, fsms=[Pair]
    )
    print("ready", flush=True)
    runner.run_forever()
    """
)


class Pair(FSM):
    """The runners' class, as this process inserts and signals it."""

    name = "lib.Pair"
    steps = ("start", "finish")

    def start(self, ctx: durable.Context) -> Await:
        return Await("go", then="finish")

    def finish(self, ctx: durable.Context) -> Done:
        return Done()


@pytest.fixture
def previous(tmp_path: Path) -> Iterator[Path]:
    """The previous release's code, in a worktree removed afterwards."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git repository")
    where = tmp_path / "previous"
    git = ["git", "-C", str(ROOT)]
    made = subprocess.run(
        [*git, "worktree", "add", "--detach", str(where), PREVIOUS], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"commit {PREVIOUS} is not available: {made.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(where)], check=True)


def test_migrate_names_the_phase_it_applies(db_url: str) -> None:
    down = cli(db_url, "migrate", "--downgrade", "0013")
    assert down.returncode == 0, down.stderr
    up = cli(db_url, "migrate")
    assert up.returncode == 0, up.stderr
    assert "0014 (expand): Versioned state and rolling deploys" in up.stdout


def test_previous_and_current_runners_side_by_side(
    engine: Engine, db_url: str, previous: Path, tmp_path: Path
) -> None:
    script = tmp_path / "pair_runner.py"
    script.write_text(RUNNER)
    procs = RunnerProcesses("unused", db_url)
    try:
        old = subprocess.Popen(
            [sys.executable, str(script), db_url, "old"],
            env={**os.environ, "PYTHONPATH": str(previous)},
            stdout=subprocess.PIPE,
        )
        new = subprocess.Popen(
            [sys.executable, str(script), db_url, "new"],
            env={**os.environ, "PYTHONPATH": ""},
            stdout=subprocess.PIPE,
        )
        procs.procs += [old, new]
        procs.wait_ready(old)
        procs.wait_ready(new)
        with Session(engine) as s, s.begin():
            ids = {q: [durable.insert(s, Pair, queue=q) for _ in range(3)] for q in ("old", "new")}
        every = ids["old"] + ids["new"]
        for i in every:
            wait_until(lambda i=i: row(engine, i).status == "awaiting", timeout=60)
        with Session(engine) as s, s.begin():
            for i in every:
                durable.signal(s, i, "go")
        for i in every:
            wait_until(lambda i=i: row(engine, i).status == "done", timeout=60)
        with engine.connect() as conn:
            ran = {q: {durable.get(conn, i).result["library"] for i in ids[q]} for q in ids}
        assert ran == {
            "old": {str(previous / "gen_durable")},
            "new": {str(ROOT / "gen_durable")},
        }
        assert {row(engine, i).state_version for i in every} == {1}
    finally:
        procs.stop_all()
