"""Runs the Python examples of README.md and docs/*.md, so the guide cannot rot.

Convention for code blocks in those pages:

- A fenced block whose info string is exactly ``python`` is executed.
- Unless its first line starts with ``# doc: skip`` (followed by the reason): fragments
  that need Flask or a user's own alembic environment, or that block forever
  (``run_forever``). Skipped blocks must still be valid Python; they are compiled.
- Blocks in any other language (``bash``, ``text``, ...) are never executed.

The executed blocks of one page run in order, in one namespace: a module of its own named
``docs_examples.<page>`` (classes register under ``module.QualifiedName``, so two pages
may both define a ``Checkout``). The namespace starts with:

- ``engine``: an engine on a fresh database with the gen_durable schema installed (the
  ``engine`` fixture of conftest.py), and the environment variable ``DATABASE_URL``
  naming that same database;
- ``wait_for``: the helper defined on docs/getting-started.md, taken from that page (the
  other pages say they use it); that page defines it itself.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support.helpers import ROOT
from sqlalchemy import Engine

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HELPER_PAGE = ROOT / "docs" / "getting-started.md"
SKIP = "# doc: skip"
OPENING = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    path: Path
    line: int
    """Line number (1-based) of the block's first code line in the page."""
    info: str
    code: str

    @property
    def is_python(self) -> bool:
        return self.info == "python"

    @property
    def skipped(self) -> bool:
        first = next((line for line in self.code.splitlines() if line.strip()), "")
        return first.lstrip().startswith(SKIP)

    @property
    def runs(self) -> bool:
        return self.is_python and not self.skipped

    def compiled(self) -> types.CodeType:
        # Padding keeps line numbers: a traceback points into the Markdown page.
        source = "\n" * (self.line - 1) + self.code
        return compile(source, str(self.path), "exec")


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page (fences must start at column 0)."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = OPENING.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["fence"]
        start = index + 1
        end = start
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        if end == len(lines):
            raise AssertionError(f"{path.name}:{index + 1}: code block is never closed")
        code = "\n".join(lines[start:end]) + "\n"
        found.append(Block(path, start + 1, opening["info"], code))
        index = end + 1
    return found


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return (
        len(stripped) >= len(fence) and set(stripped) == {fence[0]} and not line.startswith(" " * 4)
    )


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _module_name(path: Path) -> str:
    return "docs_examples." + re.sub(r"\W", "_", path.stem.lower())


def _wait_for_helper() -> Callable[..., Any]:
    for block in blocks(HELPER_PAGE):
        if block.runs and "def wait_for(" in block.code:
            namespace: dict[str, Any] = {"__name__": "docs_examples.wait_for"}
            exec(block.compiled(), namespace)
            helper: Callable[..., Any] = namespace["wait_for"]
            return helper
    raise AssertionError(f"{HELPER_PAGE.name} no longer defines wait_for in a runnable block")


RUNNABLE = [page for page in PAGES if any(b.runs for b in blocks(page))]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_blocks_are_valid(page: Path) -> None:
    """Every ``python`` block compiles, the skipped ones included."""
    for block in blocks(page):
        if block.is_python:
            block.compiled()


def test_the_guide_has_runnable_examples() -> None:
    assert HELPER_PAGE in RUNNABLE
    assert ROOT / "README.md" in RUNNABLE


@pytest.mark.parametrize("page", RUNNABLE, ids=_page_id)
def test_page_examples_run(page: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's runnable blocks run in order in one namespace, without an error."""
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    name = _module_name(page)
    module = types.ModuleType(name)
    module.__file__ = str(page)
    namespace = module.__dict__
    namespace["engine"] = engine
    if page != HELPER_PAGE:
        namespace["wait_for"] = _wait_for_helper()
    sys.modules[name] = module
    try:
        for block in blocks(page):
            if block.runs:
                exec(block.compiled(), namespace)
    finally:
        sys.modules.pop(name, None)
        for value in list(namespace.values()):
            if isinstance(value, Engine) and value is not engine:
                value.dispose()
