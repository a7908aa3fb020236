"""Small, honest modules: no library module grows past 400 lines (migrations aside)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gen_durable"
LIMIT = 400


def test_no_library_module_is_longer_than_the_limit() -> None:
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
        if "versions" not in path.parts
    }
    assert len(sizes) > 50, "the walk found the package's modules"
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
