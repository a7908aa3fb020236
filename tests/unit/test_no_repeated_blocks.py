"""No block of six or more identical lines appears twice in the library.

Code written twice drifts apart: one copy gets the fix, the other keeps the bug. Lines
are compared with their indentation folded; blank lines, comments, import lines
and lines of punctuation alone do not count. Migrations are exempt: each revision is frozen as it
shipped, and revisions repeat each other's shape by design.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "gen_durable"
WINDOW = 6
_THIN = re.compile(r"^[\s()\[\]{},:;.*]*$")
_IMPORT = re.compile(r"^(import|from) \S+( import|$)")


def _lines(path: Path) -> list[tuple[int, str]]:
    kept = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = " ".join(raw.split())
        if line and not line.startswith("#") and not _THIN.match(line) and not _IMPORT.match(line):
            kept.append((number, line))
    return kept


def repeated_blocks(root: Path) -> list[str]:
    """Each window of ``WINDOW`` counted lines found at two places that do not overlap."""
    seen: dict[tuple[str, ...], list[tuple[Path, int, int]]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        if "migrations" in path.relative_to(root).parts:
            continue
        kept = _lines(path)
        for i in range(len(kept) - WINDOW + 1):
            block = tuple(line for _, line in kept[i : i + WINDOW])
            seen[block].append((path, kept[i][0], kept[i + WINDOW - 1][0]))
    found = []
    for places in seen.values():
        first = places[0]
        for other in places[1:]:
            if other[0] != first[0] or other[1] > first[2]:
                where = [f"{p.relative_to(root)}:{a}-{b}" for p, a, b in (first, other)]
                found.append(" ~ ".join(where))
                break
    return found


def test_no_block_of_six_lines_is_written_twice() -> None:
    assert repeated_blocks(PACKAGE) == []


def test_the_check_finds_a_repeated_block(tmp_path: Path) -> None:
    body = "\n".join(f"    value_{n} = compute({n})" for n in range(WINDOW))
    (tmp_path / "a.py").write_text(f"def f():\n{body}\n")
    (tmp_path / "b.py").write_text(f"def g():\n    # other\n\n{body}\n")
    assert repeated_blocks(tmp_path) == ["a.py:2-7 ~ b.py:4-9"]
