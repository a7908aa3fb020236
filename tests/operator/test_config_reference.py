"""The configuration reference (docs/configuration.md) is what its generator makes now.

docs/gen_reference.py builds the page from signatures, docstrings and the command tree;
these tests keep the committed page from drifting and hold the generator to refusing
undocumented parameters.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest
from _support.helpers import ROOT

import gen_durable
from gen_durable.cli import main as cli
from gen_durable.domain.insert_spec import InsertOptions

GENERATOR = ROOT / "docs" / "gen_reference.py"


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def page(reference: ModuleType) -> str:
    text: str = reference.render()
    return text


def test_the_committed_page_is_current(reference: ModuleType, page: str) -> None:
    committed = reference.OUTPUT.read_text()
    generated = page
    diff = "\n".join(
        list(
            difflib.unified_diff(
                committed.splitlines(), generated.splitlines(), "committed", "generated", n=1
            )
        )[:40]
    )
    assert committed == generated, f"run {reference.COMMAND}:\n{diff}"


def test_check_exits_1_on_a_stale_page_and_0_on_a_current_one(
    reference: ModuleType, page: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "configuration.md"
    path.write_text(page.replace("| `lease` |", "| `lease_seconds` |"))
    assert reference.main(["--check", "--output", str(path)]) == 1
    assert "stale" in capsys.readouterr().err
    path.write_text(page)
    assert reference.main(["--check", "--output", str(path)]) == 0
    path.unlink()
    assert reference.main(["--output", str(path)]) == 0
    assert path.read_text() == page


def test_the_page_covers_every_configuration_object(page: str) -> None:
    for name in [
        *inspect.signature(gen_durable.Runner).parameters,
        *(p for p in inspect.signature(gen_durable.insert).parameters if p != "options"),
        *InsertOptions.__annotations__,
    ]:
        assert f"| `{name}` |" in page, name
    for option in ("queue", "priority", "max_attempts", "backoff", "timeout", "rate_limits"):
        assert f"| `{option}` |" in page, option
    for command in cli.commands:
        assert f"### gen-durable {command}\n" in page, command
    for variable in ("GEN_DURABLE_DSN", "GEN_DURABLE_ACTOR", "GEN_DURABLE_FAULTS"):
        assert f"| `{variable}` |" in page, variable
    assert "`gen_durable.serialization.set_payload_limit(nbytes: int)`" in page


def test_a_parameter_missing_from_args_is_refused(reference: ModuleType) -> None:
    def configure(size: int, colour: str = "red") -> None:
        """Configure something.

        Args:
            size: How big.
        """

    with pytest.raises(reference.Undocumented, match="'colour'"):
        reference.parameters(configure)


def test_an_args_entry_naming_no_parameter_is_refused(reference: ModuleType) -> None:
    def configure(size: int) -> None:
        """Configure something.

        Args:
            size: How big.
            colour: A parameter that was removed.
        """

    with pytest.raises(reference.Undocumented, match="colour"):
        reference.parameters(configure)


class _Options:
    documented: ClassVar[int] = 1
    """Has a docstring."""
    bare: ClassVar[str] = "x"


def test_a_class_option_without_a_docstring_is_refused(reference: ModuleType) -> None:
    with pytest.raises(reference.Undocumented, match="'bare'"):
        reference.class_options(_Options)


def test_args_entries_continue_over_indented_lines(reference: ModuleType) -> None:
    def configure(size: int, colour: str = "red") -> None:
        """Configure something.

        Args:
            size: How big, in
                ``units`` of :class:`~pkg.mod.Thing`.
            colour: Which colour.

        Returns:
            Nothing.
        """

    rows = reference.parameters(configure)
    assert [(r.name, r.type, r.default, r.doc) for r in rows] == [
        ("size", "int", "required", "How big, in ``units`` of :class:`~pkg.mod.Thing`."),
        ("colour", "str", '`"red"`', "Which colour."),
    ]
    assert reference.markdown(rows[0].doc) == "How big, in `units` of `Thing`."
