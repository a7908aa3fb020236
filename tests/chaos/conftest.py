"""Chaos fixtures: a workload database with its evidence tables, runner processes, figures.

Each test fills ``figures``; they are printed at the end of the run, and written to the
JSON file named by ``GD_CHAOS_FIGURES`` (``make chaos`` renders that file into
``docs/reliability.md``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from chaos.harness import FULL, Cluster, prepare

FIGURES_ENV = "GD_CHAOS_FIGURES"
_RESULTS = pytest.StashKey[dict[str, dict[str, Any]]]()
_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The test's published figures (kills, re-runs, recovery times ...)."""
    data: dict[str, Any] = {}
    started = time.monotonic()
    yield data
    if not data:
        return
    doc = (request.function.__doc__ or "").strip()
    title, _, invariant = doc.partition("\n\n")
    results = request.config.stash.setdefault(_RESULTS, {})
    results[request.node.name] = {
        "module": request.node.module.__name__.rsplit(".", 1)[-1],
        "title": " ".join(title.split()),
        "invariant": " ".join(invariant.split()),
        "figures": data,
        "seconds": round(time.monotonic() - started, 1),
        "passed": request.node.stash.get(_PASSED, False),
    }


@pytest.fixture
def chaos_engine(engine: Engine) -> Engine:
    """The test's database with the workload's evidence tables and triggers."""
    prepare(engine)
    return engine


@pytest.fixture
def cluster(db_url: str, chaos_engine: Engine, tmp_path: Path) -> Iterator[Cluster]:
    """Runner processes on the test's database (all killed at the end)."""
    c = Cluster(db_url, tmp_path)
    yield c
    c.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if not results:
        return
    terminalreporter.section(f"chaos figures ({'full' if FULL else 'fast'} tier)")
    for name, entry in results.items():
        shown = ", ".join(f"{k}={v}" for k, v in entry["figures"].items())
        terminalreporter.write_line(f"{name} [{entry['seconds']}s]: {shown}")
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    target = Path(path)
    existing: dict[str, Any] = {}
    if target.exists():
        existing = json.loads(target.read_text())
    tests = existing.get("tests", {})
    tests.update(results)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        json.dumps(
            {
                "tier": "full" if FULL else "fast",
                "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": f"{os.cpu_count()} CPU(s), Python {platform.python_version()}",
                "tests": tests,
            },
            indent=2,
            sort_keys=False,
        )
        + "\n"
    )
    terminalreporter.write_line(f"figures written to {target}")
