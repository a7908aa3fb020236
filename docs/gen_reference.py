"""Writes docs/configuration.md, the configuration reference, from the code itself.

    python docs/gen_reference.py            # rewrite docs/configuration.md
    python docs/gen_reference.py --check    # exit 1 when docs/configuration.md is stale

Every entry of the page comes from the objects it describes: signatures (types as written
in the annotations), the ``Args:`` sections of docstrings, attribute docstrings (the
class options of ``gen_durable.fsm.Definition``, ``FSM`` and ``Job``, and the limits),
the click command tree of ``gen-durable``, and the environment variables the package
reads (found in its source). A parameter or class option with no documentation stops the
generator: document it where it is declared, not here.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import click

import gen_durable
from gen_durable import api, fsm, models, runner, serialization
from gen_durable.cli import main as cli_main
from gen_durable.cron import Cron
from gen_durable.ratelimit import RateLimit
from gen_durable.retry import Backoff

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"
COMMAND = "python docs/gen_reference.py"
PROGRAM = "gen-durable"
NONE = "—"

# The named limits a user can run into, in the order the page lists them.
LIMITS: tuple[tuple[ModuleType, str], ...] = (
    (serialization, "DEFAULT_PAYLOAD_LIMIT"),
    (serialization, "MAX_TEXT_BYTES"),
    (serialization, "MAX_SECONDS"),
    (serialization, "MAX_INT32"),
    (serialization, "MAX_ID"),
    (fsm, "MAX_PRIORITY"),
    (runner, "DEFAULT_MAX_CHILDREN"),
    (runner, "SERVICE_CONNECTIONS"),
)
# Commands whose options pass straight to the Runner parameter of the same name: an
# option without help text of its own is documented by the Runner's.
RUNNER_COMMANDS = frozenset({"run"})
SETTINGS: tuple[Callable[..., Any], ...] = (
    serialization.set_payload_limit,
    models.configure_schema,
)


class Undocumented(Exception):
    """Something the reference must describe has no documentation at its source."""


class Row(NamedTuple):
    """One documented name: a parameter, class option, constant or command-line option."""

    name: str
    type: str
    default: str
    doc: str


# -- docstring text -> Markdown ---------------------------------------------------------

_CODE = re.compile(r"(`[^`]*`)")
_ROLE = re.compile(r":(?:class|func|meth|data|attr|exc|mod|obj):`(~?)([^`]+)`")


def markdown(text: str) -> str:
    """reStructuredText-flavoured docstring prose as Markdown (roles and literals as code)."""
    text = _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.DOTALL)
    parts = _CODE.split(text)
    # Outside code spans, < would open raw HTML and * emphasis.
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace("*", r"\*")
    return "".join(parts)


def cell(text: str) -> str:
    """Text for one table cell: one line, its pipes escaped outside code spans."""
    parts = _CODE.split(" ".join(text.split()))
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("|", r"\|")
    return "".join(parts) or NONE


def code(text: str) -> str:
    """``text`` as an inline code span (longer fences when it holds backticks)."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if text else NONE


def paragraphs(text: str) -> list[str]:
    """The paragraphs of docstring prose, each joined onto one line."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def prose(text: str) -> list[str]:
    """Docstring prose as Markdown paragraphs, each followed by a blank line."""
    return [line for p in paragraphs(text) for line in (markdown(p), "")]


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    """A Markdown table."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def value(obj: object) -> str:
    """A default value as Python would spell it (strings in double quotes)."""
    return json.dumps(obj) if isinstance(obj, str) else repr(obj)


# -- reading the documentation at its source ---------------------------------------------


def split_docstring(obj: object) -> tuple[str, dict[str, str]]:
    """(prose before ``Args:``, {parameter: its entry}) of an object's docstring."""
    lines = (inspect.getdoc(obj) or "").splitlines()
    if "Args:" not in lines:
        return "\n".join(lines), {}
    start = lines.index("Args:")
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if line and not line.startswith(" "):
            break  # the next section
        entry = re.fullmatch(r" {4}(\*{0,2}\w+): (.*)", line)
        if entry:
            current = entries.setdefault(entry[1], [])
            current.append(entry[2])
        elif line.strip() and current is not None:
            current.append(line.strip())
    return "\n".join(lines[:start]), {k: " ".join(v) for k, v in entries.items()}


def where(obj: Any) -> str:
    """How the page names a function or class: its public name when the package exports it."""
    name = getattr(obj, "__qualname__", repr(obj))
    if getattr(gen_durable, name, None) is obj:
        return f"gen_durable.{name}"
    return f"{obj.__module__}.{name}"


def parameters(obj: Callable[..., Any]) -> list[Row]:
    """A row per parameter of ``obj``, documented by the ``Args:`` section of its docstring."""
    _, docs = split_docstring(obj)
    signature = inspect.signature(obj)
    rows = []
    for param in signature.parameters.values():
        doc = docs.get(param.name)
        if not doc:
            raise Undocumented(
                f"{where(obj)}: parameter {param.name!r} has no entry in the Args: section "
                "of its docstring"
            )
        annotation = "" if param.annotation is param.empty else str(param.annotation)
        default = "required" if param.default is param.empty else code(value(param.default))
        rows.append(Row(param.name, annotation, default, doc))
    extra = sorted(set(docs) - set(signature.parameters))
    if extra:
        raise Undocumented(f"{where(obj)}: its Args: section names no parameter {extra}")
    return rows


def documented_assignments(source: str, body: list[ast.stmt]) -> Iterator[tuple[str, str, str]]:
    """(name, annotation as written, attribute docstring) per assignment in ``body``."""
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            annotation = ast.get_source_segment(source, node.annotation) or ""
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            name, annotation = node.targets[0].id, ""
        else:
            continue
        doc = ""
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            doc = inspect.cleandoc(after.value.value)
        yield name, annotation, doc


def class_options(cls: type) -> list[Row]:
    """The public class attributes ``cls`` declares, with their attribute docstrings."""
    source = textwrap.dedent(inspect.getsource(cls))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    rows = []
    for name, annotation, doc in documented_assignments(source, node.body):
        if name.startswith("_"):
            continue
        if not doc:
            raise Undocumented(f"{where(cls)}: class option {name!r} has no docstring")
        inner = re.fullmatch(r"ClassVar\[(.*)\]", annotation, flags=re.DOTALL)
        default = code(value(vars(cls)[name])) if name in vars(cls) else NONE
        rows.append(Row(name, inner[1] if inner else annotation, default, doc))
    return rows


def module_constants(module: ModuleType) -> dict[str, str]:
    """{name: attribute docstring} of a module's documented top-level assignments."""
    source = inspect.getsource(module)
    body = ast.parse(source).body
    return {name: doc for name, _, doc in documented_assignments(source, body) if doc}


# -- environment variables ---------------------------------------------------------------


class EnvRead(NamedTuple):
    """An environment variable read in the package's source, and by what."""

    variable: str
    reader: str
    doc: str


def _is_environ(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environment_reads(package: Path) -> Iterator[EnvRead]:
    """``os.environ``/``os.getenv`` reads in the package, and the ``envvar=`` it declares.

    A click option's ``envvar`` yields a row with an empty reader: the command tree
    describes it.
    """
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        module_doc = paragraphs(ast.get_docstring(tree) or "")
        strings = {
            name: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            for name in [t.id for t in node.targets if isinstance(t, ast.Name)]
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        }
        constants = {name: doc for name, _, doc in documented_assignments(source, tree.body)}
        for function, node in _walk_with_function(tree):
            name: ast.expr | None = None
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and (
                    (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv"
                ):
                    name = node.args[0] if node.args else None
                for keyword in node.keywords:
                    if keyword.arg == "envvar":
                        variable, _ = _string(keyword.value, strings, constants)
                        if variable is not None:
                            yield EnvRead(variable, "", "")
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                name = node.slice
            if name is None:
                continue
            variable, doc = _string(name, strings, constants)
            if variable is None:
                continue
            public = function is not None and not function.name.startswith("_")
            reader = f"{module}.{function.name}()" if public and function else module
            function_doc = paragraphs(ast.get_docstring(function) or "") if function else []
            doc = doc or (function_doc or module_doc or [""])[0]
            yield EnvRead(variable, reader, doc)


def _string(
    node: ast.expr, strings: dict[str, str], docs: dict[str, str]
) -> tuple[str | None, str]:
    """The string a literal or a module constant holds, and the constant's docstring."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, ""
    if isinstance(node, ast.Name) and node.id in strings:
        return strings[node.id], docs.get(node.id, "")
    return None, ""


def _walk_with_function(
    tree: ast.AST, function: ast.FunctionDef | None = None
) -> Iterator[tuple[ast.FunctionDef | None, ast.AST]]:
    for child in ast.iter_child_nodes(tree):
        yield function, child
        inner = child if isinstance(child, ast.FunctionDef) else function
        yield from _walk_with_function(child, inner)


# -- the command line --------------------------------------------------------------------


def commands(
    group: click.Group, ctx: click.Context, path: str
) -> Iterator[tuple[str, click.Command, click.Context]]:
    """Every visible command under ``group`` as (its command line, command, context)."""
    for name in sorted(group.commands):
        command = group.commands[name]
        if command.hidden:
            continue
        sub = click.Context(command, parent=ctx, info_name=name)
        yield f"{path} {name}", command, sub
        if isinstance(command, click.Group):
            yield from commands(command, sub, f"{path} {name}")


def _metavar(param: click.Parameter, ctx: click.Context) -> str:
    if param.metavar:
        return param.metavar
    try:
        return param.make_metavar(ctx)
    except TypeError:  # click before 8.2 takes no context
        return param.make_metavar()  # type: ignore[call-arg]


def _range(kind: click.ParamType) -> str:
    """A number range as click's help spells it: ``x>0``, ``1<=x<=100``."""
    low, high = getattr(kind, "min", None), getattr(kind, "max", None)
    below = "<" if getattr(kind, "min_open", False) else "<="
    above = "<" if getattr(kind, "max_open", False) else "<="
    if low is None and high is None:
        return ""
    if high is None:
        return f"x{below.replace('<', '>')}{low}"
    if low is None:
        return f"x{above}{high}"
    return f"{low}{below}x{above}{high}"


def _cli_default(param: click.Parameter, ctx: click.Context) -> str:
    if isinstance(param, click.Argument) and param.required:
        return "required"
    shown = getattr(param, "show_default", None)
    if isinstance(shown, str):
        return code(f"({shown})")
    default = param.get_default(ctx, call=False)
    if callable(default):
        return "(computed)"
    flag = isinstance(param, click.Option) and param.is_flag
    unset = default is None or type(default).__name__ == "Sentinel" or (flag and not default)
    return NONE if unset else code(value(default))


def envvars(param: click.Option) -> list[str]:
    """The environment variables an option reads."""
    if not param.envvar:
        return []
    return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)


def cli_rows(
    command: click.Command, ctx: click.Context, fallback: dict[str, str] | None = None
) -> list[Row]:
    """A row per option and argument of ``command``, in declaration order.

    ``fallback`` documents, by parameter name, the options that have no help text.
    """
    rows = []
    for param in command.params:
        if isinstance(param, click.Option):
            names = ", ".join(code(o) for o in [*param.opts, *param.secondary_opts])
            kind = "flag" if param.is_flag else _metavar(param, ctx)
            help_text = param.help or (fallback or {}).get(param.name or "", "")
            if param.envvar:
                named = ", ".join(f"``{e}``" for e in envvars(param))
                help_text += f" Environment: {named}."
        else:
            names = code(param.human_readable_name)
            kind = "argument"
            help_text = ""
        details = [d for d in (_range(param.type), "repeatable" if param.multiple else "") if d]
        if details:
            kind += f" ({', '.join(details)})"
        rows.append(Row(names, kind, _cli_default(param, ctx), help_text))
    return rows


# -- the page ----------------------------------------------------------------------------


def call_form(label: str, obj: Callable[..., Any], *, annotated: bool = False) -> str:
    """``label(a, b=1, *, c=None)``: how ``obj`` is called (annotations as written)."""
    parts: list[str] = []
    star = False
    for param in inspect.signature(obj).parameters.values():
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
    own = set(inspect.signature(api.insert).parameters) - {"bind", "cls"}
    new = set(inspect.signature(fsm.Definition.new).parameters) - {"cls"}
    batch = set(inspect.signature(api.insert_all).parameters) - {"bind", "specs"}
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
        rows.append((code(f"{module.__name__}.{name}"), shown, markdown(doc)))
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
