"""Writes docs/configuration.md, the configuration reference, from the code itself.

    python docs/gen_reference.py            # rewrite docs/configuration.md
    python docs/gen_reference.py --check    # exit 1 when docs/configuration.md is stale

Every entry of the page comes from the objects it describes: signatures (types as written
in the annotations), the ``Args:`` sections of docstrings, attribute docstrings (the
class options of ``gen_durable.domain.definitions.Definition``, ``FSM`` and ``Job``, and
the limits), the click command tree of ``gen-durable``, and the environment variables the
package reads (found in its source). A parameter or class option with no documentation
stops the generator: document it where it is declared, not here.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import click

import gen_durable
from gen_durable import client as api
from gen_durable import runner
from gen_durable.cli import main as cli_main
from gen_durable.domain import definitions as fsm
from gen_durable.domain import options, serialization
from gen_durable.domain.cron import Cron
from gen_durable.domain.ratelimit import RateLimit
from gen_durable.domain.retry import Backoff
from gen_durable.store import models

# The helper module next to this script, also when the script is loaded by its path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_sources import (
    Row,
    Undocumented,
    class_options,
    cli_rows,
    code,
    commands,
    environment_reads,
    envvars,
    markdown,
    module_constants,
    paragraphs,
    parameters,
    prose,
    signature_parameters,
    split_docstring,
    table,
    value,
    where,
)

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
COMMAND = "python docs/gen_reference.py"
PROGRAM = "gen-durable"

# The named limits a user can run into, in the order the page lists them.
LIMITS: tuple[tuple[ModuleType, str], ...] = (
    (serialization, "DEFAULT_PAYLOAD_LIMIT"),
    (serialization, "MAX_TEXT_BYTES"),
    (serialization, "MAX_SECONDS"),
    (serialization, "MAX_INT32"),
    (serialization, "MAX_ID"),
    (options, "MAX_PRIORITY"),
    (runner, "DEFAULT_MAX_CHILDREN"),
    (runner, "SERVICE_CONNECTIONS"),
)
# Modules documented at a shorter path than where they live.
PUBLIC_PATHS = {"gen_durable.domain.serialization": "gen_durable.serialization"}
# Commands whose options pass straight to the Runner parameter of the same name: an
# option without help text of its own is documented by the Runner's.
RUNNER_COMMANDS = frozenset({"run"})
SETTINGS: tuple[Callable[..., Any], ...] = (
    serialization.set_payload_limit,
    models.configure_schema,
)


# -- the page ----------------------------------------------------------------------------


def call_form(label: str, obj: Callable[..., Any], *, annotated: bool = False) -> str:
    """``label(a, b=1, *, c=None)``: how ``obj`` is called (annotations as written)."""
    parts: list[str] = []
    star = False
    for param in signature_parameters(obj):
        if param.kind is param.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = param.name
        if annotated and param.annotation is not param.empty:
            text += f": {param.annotation}"
        if param.default is not param.empty:
            text += f" = {value(param.default)}" if annotated else f"={value(param.default)}"
        parts.append(text)
        star = star or param.kind is param.VAR_POSITIONAL
    return f"{label}({', '.join(parts)})"


def signature_block(label: str, obj: Callable[..., Any]) -> list[str]:
    """How ``obj`` is called, wrapped to the page's width, in a text block."""
    text = call_form(label, obj)
    indent = " " * (len(label) + 1)
    wrapped = textwrap.wrap(text, 88, subsequent_indent=indent, break_on_hyphens=False)
    return ["```text", *wrapped, "```"]


def parameter_section(heading: str, label: str, obj: Callable[..., Any]) -> list[str]:
    """A heading, the signature, the docstring's prose and a table of the parameters."""
    text, _ = split_docstring(obj)
    rows = parameters(obj)
    return [
        f"## {heading}",
        "",
        *signature_block(label, obj),
        "",
        *prose(text),
        *table(
            ["parameter", "type", "default", "meaning"],
            [(code(r.name), code(r.type), r.default, markdown(r.doc)) for r in rows],
        ),
        "",
    ]


def options_table(rows: list[Row]) -> list[str]:
    """The table of some class options."""
    return [
        *table(
            ["option", "type", "default", "meaning"],
            [(code(r.name), code(r.type), r.default, markdown(r.doc)) for r in rows],
        ),
        "",
    ]


def class_options_section() -> list[str]:
    """The options of every FSM and Job class, then those of FSMs and of Jobs only."""
    lines = [
        "## FSM and Job class options",
        "",
        "Class attributes of an `FSM` or `Job` subclass, checked when the class is defined "
        "(a bad value raises `DefinitionError`).",
        "",
        "### Every class",
        "",
        *options_table(class_options(fsm.Definition)),
    ]
    for cls in (fsm.FSM, fsm.Job):
        lines += [
            f"### {cls.__name__} only",
            "",
            *[markdown(p) for p in paragraphs(inspect.getdoc(cls) or "")[:1]],
            "",
            *options_table(class_options(cls)),
        ]
    return lines


def insert_section() -> list[str]:
    """``insert()``, then how ``Cls.new`` and ``insert_all`` share its options."""
    lines = parameter_section("insert()", "gen_durable.insert", api.insert)
    own = {p.name for p in signature_parameters(api.insert)} - {"bind", "cls"}
    new = {p.name for p in signature_parameters(fsm.Definition.new)} - {"cls"}
    batch = {p.name for p in signature_parameters(api.insert_all)} - {"bind", "specs"}
    unknown = sorted((new | batch) - own)
    if unknown:
        raise Undocumented(f"Cls.new/insert_all take options insert() does not: {unknown}")

    def listing(names: Iterable[str]) -> str:
        return ", ".join(code(n) for n in sorted(names))

    lines += [
        f"`Cls.new(...)` builds the specs `insert_all` inserts; it takes the options of "
        f"`insert()` but {listing(own - new)}. `insert_all(bind, specs, ...)` takes "
        f"{listing(batch)} for the whole batch.",
        "",
    ]
    return lines


def settings_section() -> list[str]:
    """The process-wide settings (the payload limit, the schema) and the named limits."""
    lines = ["## Process-wide settings", ""]
    for function in SETTINGS:
        lines += [f"### `{call_form(where(function), function, annotated=True)}`", ""]
        lines += prose(inspect.getdoc(function) or "")
    rows = []
    for module, name in LIMITS:
        doc = module_constants(module).get(name)
        if not doc:
            raise Undocumented(f"{module.__name__}.{name} has no docstring")
        shown = code(value(getattr(module, name)))
        path = PUBLIC_PATHS.get(module.__name__, module.__name__)
        rows.append((code(f"{path}.{name}"), shown, markdown(doc)))
    lines += ["## Limits", "", *table(["constant", "value", "meaning"], rows), ""]
    return lines


def environment_section() -> list[str]:
    """The environment variables the package reads, and what reads each."""
    ctx = click.Context(cli_main, info_name=PROGRAM)
    by_option: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for line, command, _ in commands(cli_main, ctx, PROGRAM):
        for param in command.params:
            if isinstance(param, click.Option):
                for envvar in envvars(param):
                    key = (envvar, param.opts[-1])
                    _, names = by_option.setdefault(key, (param.help or "", []))
                    names.append(line.removeprefix(f"{PROGRAM} "))
    reads = list(environment_reads(ROOT / "gen_durable"))
    missing = sorted({r.variable for r in reads if not r.reader} - {e for e, _ in by_option})
    if missing:
        raise Undocumented(f"envvar= of options on no {PROGRAM} command: {missing}")
    rows = [
        (code(envvar), f"`{option}` of `{PROGRAM}` {', '.join(names)}", markdown(help_text))
        for (envvar, option), (help_text, names) in sorted(by_option.items())
    ]
    rows += [
        (code(r.variable), code(r.reader), markdown(r.doc))
        for r in sorted({r for r in reads if r.reader})
    ]
    rows.sort(key=lambda row: row[0])
    return ["## Environment variables", "", *table(["variable", "read by", "meaning"], rows), ""]


def cli_section() -> list[str]:
    """Every ``gen-durable`` command: its usage, help text and parameters."""
    ctx = click.Context(cli_main, info_name=PROGRAM)
    lines = [
        "## Command line",
        "",
        f"`{PROGRAM}` (also `python -m gen_durable`); every command also takes `--help`.",
        "",
        *[markdown(p) for p in paragraphs(inspect.cleandoc(cli_main.help or ""))],
        "",
        "Options of the program itself:",
        "",
        *_cli_table(cli_rows(cli_main, ctx)),
    ]
    for line, command, sub in commands(cli_main, ctx, PROGRAM):
        usage = " ".join([line, *command.collect_usage_pieces(sub)])
        # A line holding only \b tells click not to rewrap the paragraph after it.
        help_lines = inspect.cleandoc(command.help or "").splitlines()
        text = "\n".join(h for h in help_lines if h != "\b")
        lines += [f"### {line}", "", "```text", usage, "```", "", *prose(text)]
        fallback = None
        if command.name in RUNNER_COMMANDS:
            _, docs = split_docstring(gen_durable.Runner)
            fallback = {
                name: f"{doc.rstrip('.')} (see ``Runner({name}=...)``)."
                for name, doc in docs.items()
            }
        lines += _cli_table(cli_rows(command, sub, fallback))
    return lines


def _cli_table(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    return [
        *table(
            ["parameter", "value", "default", "meaning"],
            [(r.name, code(r.type), r.default, markdown(r.doc)) for r in rows],
        ),
        "",
    ]


def render() -> str:
    """The whole page."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- generated by {COMMAND}; do not edit -->",
        "",
        '!!! note "Generated page"',
        f"    Generated by `{COMMAND}` from the code's signatures, docstrings and command "
        "tree; do not edit it by hand. Change the documentation where a parameter is "
        f"declared, then run `{COMMAND}`. `{COMMAND} --check` exits 1 when this page is "
        "stale; the test suite runs it.",
        "",
        *parameter_section("Runner", "Runner", gen_durable.Runner),
        *class_options_section(),
        *parameter_section("RateLimit", "RateLimit", RateLimit),
        *parameter_section("Backoff", "Backoff", Backoff),
        *parameter_section("Cron", "Cron", Cron),
        *insert_section(),
        *settings_section(),
        *environment_section(),
        *cli_section(),
    ]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page, or with ``--check`` report whether it is stale (exit 1)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the page to write")
    options = parser.parse_args(argv)
    try:
        text = render()
    except Undocumented as exc:
        print(f"undocumented: {exc}", file=sys.stderr)
        return 2
    output: Path = options.output
    if not options.check:
        output.write_text(text)
        return 0
    current = output.read_text() if output.exists() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(), text.splitlines(), str(output), "generated", lineterm="", n=1
    )
    print("\n".join(list(diff)[:60]), file=sys.stderr)
    print(f"{output} is stale: run {COMMAND}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
