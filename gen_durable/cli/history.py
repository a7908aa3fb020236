"""``gen-durable graph CLASS`` (the recorded history as a diagram) and ``gen-durable audit``."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import click

from gen_durable import store
from gen_durable.cli import dsn_option, main, open_engine
from gen_durable.cli.instances import _emit, _table, json_option, page_option
from gen_durable.client import graph as client_graph

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset({"state", "note", "end", "direction", "class", "classDef", "as"})
"""Words Mermaid reads as syntax: steps named so are drawn through an alias."""


@main.command()
@dsn_option
@click.argument("fsm", metavar="CLASS")
@json_option
def graph(dsn: str | None, fsm: str, as_json: bool) -> None:
    """Draw the transitions recorded for CLASS (registry name) as a Mermaid state diagram.

    Built from the history table: each edge is a transition that happened, with how many
    times it did; ``[*]`` is where instances started and where they finished. Edges no
    step made are labelled with their kind: an await's ``timeout``, the reaper's
    ``lease_expired``, an ``outside_cancel``. Only classes whose history is recorded
    (``history = "all"`` or ``"errors"``) have one.
    """
    with open_engine(dsn) as engine, engine.connect() as conn:
        found = client_graph.edges(conn, fsm)
        known = bool(found) or _known(conn, fsm)
    if not known:
        raise click.ClickException(f"unknown class {fsm!r}: no instance has it, no runner knows it")
    if not found:
        raise click.ClickException(
            f"no history is recorded for class {fsm!r} (is its history setting 'none'?)"
        )
    edges = [{"from": e.source, "to": e.target, "kind": e.kind, "count": e.count} for e in found]
    if as_json:
        _emit({"fsm": fsm, "edges": edges})
        return
    click.echo(mermaid(edges))


def _known(conn: Any, fsm: str) -> bool:
    """Some instance has class ``fsm``, or some registered runner knows it."""
    if store.queries.list_instances(conn, fsm=fsm, limit=1):
        return True
    return any(fsm in (node.fsms or ()) for node in store.maintenance.list_nodes(conn, None))


def mermaid(edges: Sequence[dict[str, Any]]) -> str:
    """A ``stateDiagram-v2`` of edges (``from``/``to`` None: the start or the end, ``[*]``)."""
    names = sorted({e[end] for e in edges for end in ("from", "to") if e[end] is not None})
    ids: dict[str, str] = {}
    lines = ["stateDiagram-v2"]
    aliases = (f"step_{n}" for n in range(len(names) * 2 + 1))
    for name in names:
        if _PLAIN.fullmatch(name) and name not in _KEYWORDS:
            ids[name] = name
            continue
        ids[name] = next(a for a in aliases if a not in names)
        lines.append(f'    state "{name.replace(chr(34), "#quot;")}" as {ids[name]}')
    for e in edges:
        source = "[*]" if e["from"] is None else ids[e["from"]]
        target = "[*]" if e["to"] is None else ids[e["to"]]
        label = "started" if e["kind"] == "start" else e["kind"]
        lines.append(f"    {source} --> {target}: {label} ({e['count']})")
    return "\n".join(lines)


@main.command()
@dsn_option
@click.option("--action", help="Only this action (retry, cancel, signal, pause, resume, prune).")
@click.option("--target", help="Only actions on this instance id, correlation key or queue.")
@click.option("--actor", help="Only actions by this actor.")
@page_option
@click.option("--before", "before_id", type=int, help="Page: audit ids below this one.")
@json_option
def audit(dsn: str | None, as_json: bool, **filters: Any) -> None:
    """List operator actions, newest first: who retried, cancelled, signalled, paused,
    resumed or pruned what, and when (paginate with --before LAST_ID)."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        rows = [r._asdict() for r in store.audit.listing(conn, **filters)]
    if as_json:
        _emit(rows)
        return
    for row in rows:
        row["details"] = None if row["details"] is None else json.dumps(row["details"])
    _table(rows, ["id", "at", "action", "target", "instance_id", "actor", "details"])
    if len(rows) == filters["limit"]:
        click.echo(f"more: --before {rows[-1]['id']}")
