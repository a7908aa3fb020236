"""What ``gen-durable show`` prints of one instance: its fields, error, signals, children,
re-runs (steps that ran more than once, and why) and recorded history."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy import Connection

from gen_durable import client as api
from gen_durable import store

CHILDREN_SHOWN = 50
"""At most this many children are listed (the count says how many there are)."""

_WHY = {
    store.history.LEASE_EXPIRED: "lease of runner {runner} expired",
    store.history.RELEASED: "released at the shutdown of runner {runner}",
    store.history.RAISED: "it raised {error}",
}


def children(conn: Connection, parent_id: int) -> dict[str, Any]:
    """The children an instance spawned: how many, and the first :data:`CHILDREN_SHOWN`."""
    ids = store.children.ids_of(conn, parent_id)
    listed = []
    for child_id in ids[:CHILDREN_SHOWN]:
        child = api.get(conn, child_id)
        listed.append(
            {"id": child.id, "fsm": child.fsm, "status": child.status, "step": child.step}
        )
    return {"count": len(ids), "listed": listed}


def reruns(conn: Connection, instance: dict[str, Any], limit: int) -> dict[str, Any]:
    """The instance's re-runs (newest ``limit``) and, per step, how many times it ran."""
    found = store.history.reruns_of(conn, instance["id"], limit) if limit else []
    rows = [r._asdict() for r in found]
    return {"rows": rows, "summary": summary(rows, instance)}


def summary(rows: list[dict[str, Any]], instance: dict[str, Any]) -> list[str]:
    """``step `charge` ran 2 times: lease of runner X expired``: one line per run of a step
    that ended, once or more, without its transition.

    None of these ends moves the version on (a retry re-runs the step at its version, with
    its idempotency key): rows of one step and version make one chain. The step ran once
    more than the chain has rows if the instance went on past it (a later version), as many
    times if it ended there (failed, cancelled), and the count is "so far" while it may
    still run again.
    """
    chains: list[list[dict[str, Any]]] = []
    for row in rows:
        last = chains[-1][-1] if chains else None
        if last is not None and (last["step"], last["version"]) == (row["step"], row["version"]):
            chains[-1].append(row)
        else:
            chains.append([row])
    lines = []
    for chain in chains:
        went_on = instance["version"] > chain[-1]["version"]
        runs = len(chain) + (1 if went_on else 0)
        so_far = "" if went_on or instance["finished_at"] is not None else " so far"
        why: list[str] = []
        for row in chain:
            error = (row["error"] or "").splitlines()[0] if row["error"] else ""
            text = _WHY.get(row["reason"], row["reason"]).format(runner=row["runner"], error=error)
            why += [] if text in why else [text]
        step = chain[0]["step"]
        lines.append(f"step `{step}` ran {runs} time{'s' * (runs != 1)}{so_far}: {'; '.join(why)}")
    return lines


def echo(data: dict[str, Any]) -> None:
    """Print ``show``'s text form of ``data`` (the JSON form's fields)."""
    data = dict(data)
    error, signals, history = data.pop("error"), data.pop("signals"), data.pop("history")
    spawned, reran = data.pop("children"), data.pop("reruns")
    for key, value in data.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        click.echo(f"{key:>16}: {'' if shown is None else shown}")
    if error:
        click.echo(f"{'error':>16}: {error.get('type')}: {error.get('message')}")
        if error.get("traceback"):
            click.echo(error["traceback"].rstrip())
    click.echo(f"{'signals':>16}: {len(signals)}")
    for s in signals:
        state = "consumed" if s["consumed_at"] else "pending"
        click.echo(f"{'':>18}#{s['id']} {s['name']} ({state}) {json.dumps(s['payload'])}")
    if spawned["count"]:
        click.echo(f"{'children':>16}: {spawned['count']}")
        for c in spawned["listed"]:
            click.echo(f"{'':>18}#{c['id']} {c['fsm']} {c['status']} at {c['step']}")
        if spawned["count"] > len(spawned["listed"]):
            click.echo(f"{'':>18}... and {spawned['count'] - len(spawned['listed'])} more")
    if reran["rows"]:
        click.echo(f"{'re-runs':>16}: {len(reran['rows'])}")
        for line in reran["summary"]:
            click.echo(f"{'':>18}{line}")
    _echo_timeline(history, reran["rows"])


def _echo_timeline(history: list[dict[str, Any]], reran: list[dict[str, Any]]) -> None:
    """Transitions and re-runs, in time order."""
    if not history and not reran:
        return
    click.echo(f"{'history':>16}: last {len(history)} recorded transition(s), re-runs marked")
    events = [(h["at"], 0, h) for h in history] + [(r["at"], 1, r) for r in reran]
    for at, kind, row in sorted(events, key=lambda e: (e[0], e[1])):
        if kind:
            why = _WHY.get(row["reason"], row["reason"]).format(runner=row["runner"], error="")
            click.echo(
                f"{'':>18}{at:%Y-%m-%d %H:%M:%S} {row['step']} ran again "
                f"[{row['reason']}] attempt {row['attempt']}: {why.rstrip()}"
            )
            continue
        goes = row["to_step"] if row["to_step"] is not None else row["status"]
        click.echo(
            f"{'':>18}{at:%Y-%m-%d %H:%M:%S} {row['from_step']} -> {goes} "
            f"[{row['kind']}] attempt {row['attempt']}, {row['duration_ms']:.1f} ms"
        )
        if row["error"]:
            click.echo(f"{'':>20}{row['error'].splitlines()[0]}")
