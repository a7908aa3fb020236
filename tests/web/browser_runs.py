"""What the browser tests ran, for the run's summary (tests/web/conftest.py)."""

from __future__ import annotations

from typing import Any

BROWSER_TESTS = "tests/web/test_web_browser.py"
ran: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0, "browser": None}


def note_browser(version: str) -> None:
    """Record the version of the browser the tests launched."""
    ran["browser"] = version
