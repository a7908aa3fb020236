"""The browser tests say in the run's summary that they ran, and in which browser (CI's
log must show them run, not skipped)."""

from __future__ import annotations

from typing import Any

import pytest
from browser_runs import BROWSER_TESTS, ran


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.nodeid.startswith(BROWSER_TESTS):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        ran[report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not any(ran[k] for k in ("passed", "failed", "skipped")):
        return
    terminalreporter.write_line(
        f"browser tests: {ran['passed']} passed, {ran['failed']} failed, "
        f"{ran['skipped']} skipped, in Chromium {ran['browser'] or '(not launched)'}"
    )
