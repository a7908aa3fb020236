"""The parts docs/gen_reference.py builds the configuration reference from.

Reading each entry's documentation where it is declared: the ``Args:`` section of a
docstring (:func:`parameters`), attribute docstrings in a class or module body
(:func:`class_options`, :func:`module_constants`), the environment variables the package's
source reads (:func:`environment_reads`) and the options of the click command tree
(:func:`cli_rows`), each as :class:`Row` records or raising :class:`Undocumented`; and the
Markdown these are written in (:func:`markdown`, :func:`table`, :func:`code`, ...).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import textwrap
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import click

import gen_durable

NONE = "—"
"""What an empty cell shows."""


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
    # A module documented at a shorter path (a facade module) that re-exports it.
    facade = obj.__module__.replace(".domain.", ".")
    if facade != obj.__module__ and getattr(importlib.import_module(facade), name, None) is obj:
        return f"{facade}.{name}"
    return f"{obj.__module__}.{name}"


def signature_parameters(obj: Callable[..., Any]) -> list[inspect.Parameter]:
    """``obj``'s parameters, a ``**options: Unpack[SomeTypedDict]`` spread into the
    TypedDict's keywords (keyword-only, default None) where it stands."""
    hints = typing.get_type_hints(obj)
    out: list[inspect.Parameter] = []
    for param in inspect.signature(obj).parameters.values():
        spread = _unpacked(hints.get(param.name)) if param.kind is param.VAR_KEYWORD else None
        if spread is None:
            out.append(param)
            continue
        for name, annotation, _ in typed_dict_fields(spread):
            out.append(inspect.Parameter(name, param.KEYWORD_ONLY, default=None,
                                         annotation=annotation))  # fmt: skip
    return out


def _unpacked(hint: Any) -> type | None:
    if typing.get_origin(hint) is typing.Unpack:
        inner = typing.get_args(hint)[0]
        return inner if typing.is_typeddict(inner) else None
    return None


def typed_dict_fields(cls: type) -> list[tuple[str, str, str]]:
    """(name, annotation as written, attribute docstring) of each field of a TypedDict."""
    source = textwrap.dedent(inspect.getsource(cls))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef)
    return list(documented_assignments(source, node.body))


def parameters(obj: Callable[..., Any]) -> list[Row]:
    """A row per parameter of ``obj``, documented by the ``Args:`` section of its docstring
    (a spread TypedDict's keywords by the TypedDict's attribute docstrings)."""
    _, docs = split_docstring(obj)
    hints = typing.get_type_hints(obj)
    spread_docs: dict[str, str] = {}
    spreads: set[str] = set()
    for param in inspect.signature(obj).parameters.values():
        spread = _unpacked(hints.get(param.name)) if param.kind is param.VAR_KEYWORD else None
        if spread is not None:
            spreads.add(param.name)
            spread_docs.update({name: doc for name, _, doc in typed_dict_fields(spread)})
    rows = []
    names = []
    for param in signature_parameters(obj):
        names.append(param.name)
        doc = docs.get(param.name) or spread_docs.get(param.name)
        if not doc:
            raise Undocumented(
                f"{where(obj)}: parameter {param.name!r} has no entry in the Args: section "
                "of its docstring"
            )
        annotation = "" if param.annotation is param.empty else str(param.annotation)
        default = "required" if param.default is param.empty else code(value(param.default))
        rows.append(Row(param.name, annotation, default, doc))
    extra = sorted(set(docs) - set(names) - spreads)
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
