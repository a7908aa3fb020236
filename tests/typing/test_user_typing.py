"""``mypy --strict`` over code written the way users write it, outside this repository.

One mypy run for the module (a fresh cache under a temporary directory), from a
directory outside the checkout: ``gen_durable`` is found the way a user's project finds
it — through the virtualenv's installation (an editable install must not hide it from
type checkers). The run covers the README's example, the Typing example of
docs/getting-started.md, the Flask and Django examples, and modules with deliberate
mistakes whose errors must be reported.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG = """\
[mypy]
strict = True
python_version = 3.11

# The README's example is a sketch without annotations; what it calls is still checked.
[mypy-readme_example]
allow_untyped_defs = True
allow_incomplete_defs = True
"""

TYPOS = """\
from __future__ import annotations

import attrs

from gen_durable import FSM, Context, Done, Job, Next, Outcome


@attrs.define
class OrderState:
    order: int


class Checkout(FSM[OrderState]):
    steps = ("start", "ship")

    def step(self, name: str, ctx: Context[OrderState]) -> Outcome:
        if name == "start":
            return Next("ship")
        return Done({"order": ctx.state.ordr})  # TYPO-STATE


class Nested(FSM):
    steps = ("start",)

    @attrs.define
    class State:
        order: int

    def start(self, ctx: Context[Nested.State]) -> Done:
        return Done(ctx.state.oder)  # TYPO-NESTED


class Charge(Job[OrderState]):
    def perform(self, args: OrderState) -> int:
        return args.amount  # TYPO-ARGS


class Wrong(FSM[OrderState]):
    steps = ("start",)

    def step(self, name: str, ctx: Context[int]) -> Outcome:  # WRONG-CONTEXT
        return Done()
"""


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.M | re.S)


def typing_section_example() -> str:
    text = (ROOT / "docs" / "getting-started.md").read_text()
    section = text.split("\n## Typing\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)
    # The page's blocks share a namespace that gives them ``engine``.
    return "from sqlalchemy import Engine\n\nengine: Engine\n" + code


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy's errors by file, from one run over the user modules."""
    home = tmp_path_factory.mktemp("user_project")
    (home / "mypy.ini").write_text(CONFIG)
    (home / "readme_example.py").write_text(python_blocks(ROOT / "README.md")[0])
    (home / "typing_example.py").write_text(typing_section_example())
    (home / "typos.py").write_text(TYPOS)
    examples = home / "examples"
    examples.mkdir()
    shutil.copy(ROOT / "examples" / "__init__.py", examples)
    for name in ("flask_checkout", "django_checkout"):
        shutil.copytree(ROOT / "examples" / name, examples / name)
    targets = ["readme_example.py", "typing_example.py", "typos.py", "examples"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)  # nothing of the checkout is on mypy's path but the installation
        out, err, _status = api.run(
            ["--config-file", "mypy.ini", "--cache-dir", str(home / ".cache"), *targets]
        )
    assert not err, err
    errors: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"(?P<file>[^:]+):(?P<line>\d+): error: (?P<message>.*)", line)
        if match:
            errors.setdefault(match["file"], []).append(f"{match['line']}: {match['message']}")
    return errors


@pytest.mark.parametrize(
    "path",
    [
        "readme_example.py",
        "typing_example.py",
        "examples/flask_checkout",
        "examples/django_checkout",
    ],
)
def test_users_code_is_clean_under_mypy_strict(report: dict[str, list[str]], path: str) -> None:
    found = {file: errors for file, errors in report.items() if file.startswith(path)}
    assert found == {}


def line_of(marker: str) -> int:
    return next(n for n, line in enumerate(TYPOS.splitlines(), 1) if marker in line)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("TYPO-STATE", '"OrderState" has no attribute "ordr"'),
        ("TYPO-NESTED", '"State" has no attribute "oder"'),
        ("TYPO-ARGS", '"OrderState" has no attribute "amount"'),
        ("WRONG-CONTEXT", 'supertype defines the argument type as "Context[OrderState]"'),
    ],
)
def test_a_mistake_about_the_state_is_reported(
    report: dict[str, list[str]], marker: str, message: str
) -> None:
    errors = report.get("typos.py", [])
    assert any(e.startswith(f"{line_of(marker)}: ") and message in e for e in errors), errors


def test_only_the_deliberate_mistakes_are_reported(report: dict[str, list[str]]) -> None:
    marked = {line_of(m) for m in ("TYPO-STATE", "TYPO-NESTED", "TYPO-ARGS", "WRONG-CONTEXT")}
    lines = {int(e.split(":", 1)[0]) for e in report.get("typos.py", [])}
    assert lines == marked, textwrap.indent("\n".join(report.get("typos.py", [])), "  ")
