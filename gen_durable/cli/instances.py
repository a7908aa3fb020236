"""Operator commands on instances: ls, show, signal, cancel, retry, prune, stats, pause,
resume."""

from __future__ import annotations

import json
from typing import Any

import click
from sqlalchemy.orm import Session
from tabulate import tabulate

from gen_durable import client as api
from gen_durable import store
from gen_durable.cli import detail, dsn_option, main, open_engine
from gen_durable.cli.operator import (
    Limit,
    Name,
    actor_option,
)
from gen_durable.client.fleet import workers
from gen_durable.errors import DurableError
from gen_durable.store import models
from gen_durable.types import InstanceSnapshot

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
page_option = click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Rows per page.",
)
"""The page size of a listing (paginated with ``--before``)."""


def _target(value: str) -> int | str:
    """An instance id when the argument is all digits, else a correlation key."""
    return int(value) if value.isdigit() else value


def _fail(exc: DurableError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, sort_keys=True))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """``columns`` of ``rows`` as a plain, left-aligned table under upper-case headers."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[("" if r[c] is None else str(r[c])) for c in columns] for r in rows]
    headers = [c.upper() for c in columns]
    # Every cell as text, left-aligned: ids and keys read alike, never as numbers.
    text = tabulate(cells, headers, tablefmt="plain", disable_numparse=True, stralign="left")
    click.echo("\n".join(line.rstrip() for line in text.splitlines()))


@main.command(name="ls")
@dsn_option
@click.option("--class", "fsm", help="Registry name of the FSM or Job class.")
@click.option("--status", type=click.Choice(models.STATUSES), help="Only this status.")
@click.option("--queue", help="Only this queue.")
@click.option("--step", help="Only instances at this step.")
@click.option("--key", "correlation_key", help="Correlation key.")
@page_option
@click.option("--before", "before_id", type=int, help="Page: ids below this one.")
@click.option(
    "--stuck",
    is_flag=True,
    help="Only instances no live runner can run: parked by a failing state upgrade, or at "
    "a step or state version no live runner of their class knows.",
)
@json_option
def list_command(dsn: str | None, as_json: bool, **filters: Any) -> None:
    """List instances, newest first (paginate with --before LAST_ID). ATTEMPT of a done
    instance is the attempt that finished it."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        rows = [r._asdict() for r in store.queries.list_instances(conn, **filters)]
        done = [r["id"] for r in rows if r["status"] == "done"]
        finishing = store.history.finishing_attempts(conn, done)
    for row in rows:  # the time it became due: past, and beside the point, once it runs
        row["run_at"] = None if row["status"] == "running" else row["run_at"]
        row["attempt"] = finishing.get(row["id"], row["attempt"])
    if as_json:
        _emit(rows)
        return
    _table(rows, ["id", "fsm", "status", "step", "queue", "attempt", "correlation_key", "run_at"])
    if len(rows) == filters["limit"]:
        click.echo(f"more: --before {rows[-1]['id']}")


def _snapshot_json(snap: InstanceSnapshot) -> dict[str, Any]:
    data = {
        field: getattr(snap, field)
        for field in (
            "id",
            "fsm",
            "status",
            "step",
            "state",
            "queue",
            "priority",
            "attempt",
            "max_attempts",
            "version",
            "correlation_key",
            "run_at",
            "awaiting",
            "result",
            "error",
            "parent_id",
            "created_at",
            "updated_at",
            "finished_at",
        )
    }
    data["signals"] = [
        {
            "id": s.id,
            "name": s.name,
            "payload": s.payload,
            "created_at": s.created_at,
            "consumed_at": s.consumed_at,
            "idempotency_key": s.idempotency_key,
        }
        for s in snap.signals
    ]
    return data


@main.command()
@dsn_option
@click.argument("target")
@click.option(
    "--history",
    "history_limit",
    default=20,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="How many of the last recorded transitions, and of the re-runs, to show (0: none).",
)
@json_option
def show(dsn: str | None, target: str, history_limit: int, as_json: bool) -> None:
    """Show one instance (by ID or correlation KEY): state, step, errors, signals, the
    children it spawned, its steps' re-runs, and its last transitions when history is
    recorded for its class."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        try:
            data = _snapshot_json(api.get(conn, _target(target)))
        except DurableError as exc:
            raise _fail(exc) from exc
        rows = store.history.of_instance(conn, data["id"], history_limit) if history_limit else []
        data["children"] = detail.children(conn, data["id"])
        data["reruns"] = detail.reruns(conn, data, history_limit)
    data["history"] = [_history_json(r) for r in rows]
    if as_json:
        _emit(data)
        return
    detail.echo(data)


def _history_json(row: store.history.HistoryRecord) -> dict[str, Any]:
    return {
        key: getattr(row, key)
        for key in (
            "at",
            "version",
            "attempt",
            "from_step",
            "to_step",
            "kind",
            "status",
            "duration_ms",
            "error",
        )
    }


@main.command(name="signal")
@dsn_option
@click.argument("target")
@click.argument("name")
@click.argument("payload", required=False, default="null")
@click.option(
    "--idempotency-key",
    default=None,
    help="Deliver once per key and instance (a repeat is reported).",
)
@actor_option
@json_option
def signal_command(
    dsn: str | None,
    target: str,
    name: str,
    payload: str,
    idempotency_key: str | None,
    actor: str,
    as_json: bool,
) -> None:
    """Send signal NAME with a JSON PAYLOAD to an instance (ID or correlation KEY)."""
    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from exc
    with open_engine(dsn) as engine, Session(engine) as s, s.begin():
        try:
            sent = api.signal(
                s, _target(target), name, body, idempotency_key=idempotency_key, actor=actor
            )
        except DurableError as exc:
            raise _fail(exc) from exc
    result = {
        "signal_id": sent.signal_id,
        "instance_id": sent.instance_id,
        "duplicate": sent.duplicate,
    }
    if as_json:
        _emit(result)
    else:
        dup = " (duplicate)" if sent.duplicate else ""
        click.echo(f"signal {sent.signal_id} -> instance {sent.instance_id}{dup}")


@main.command()
@dsn_option
@json_option
def stats(dsn: str | None, as_json: bool) -> None:
    """Instances per queue and status; unfinished ones per step; instances finished in
    the last 1, 5 and 15 minutes."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        counts = [r._asdict() for r in store.queries.counts(conn)]
        steps = [r._asdict() for r in store.queries.step_counts(conn)]
        finished = [r._asdict() for r in store.queries.throughput(conn, None)]
    if as_json:
        _emit({"counts": counts, "steps": steps, "throughput": finished})
        return
    _table(counts, ["queue", "status", "n"])
    click.echo("\nunfinished, per step:")
    _table(steps, ["queue", "fsm", "step", "status", "n"])
    click.echo("\nfinished in the last minutes:")
    windows = [f"last_{m}m" for m in store.queries.THROUGHPUT_WINDOWS]
    _table(finished, ["queue", "status", *windows])


@main.command()
@dsn_option
@click.argument("queue", type=Name())
@actor_option
def pause(dsn: str | None, queue: str, actor: str) -> None:
    """Pause QUEUE on every runner (running steps finish, nothing new starts). A queue no
    live runner serves is paused all the same (a runner started later obeys it): the
    command says so, in case the name is misspelt."""
    with open_engine(dsn) as engine, Session(engine) as s, s.begin():
        api.pause_queue(s, queue, actor=actor)
        served = any(queue in w.queues for w in workers(s) if not w.stale)
    click.echo(f"queue {queue!r} paused")
    if not served:
        click.echo(f"note: no live runner serves queue {queue!r} (a misspelt name?)")


@main.command()
@dsn_option
@click.argument("queue", type=Name())
@actor_option
def resume(dsn: str | None, queue: str, actor: str) -> None:
    """Resume QUEUE on every runner."""
    with open_engine(dsn) as engine, Session(engine) as s, s.begin():
        api.resume_queue(s, queue, actor=actor)
    click.echo(f"queue {queue!r} resumed")


@main.command()
@dsn_option
@click.argument("queue", type=Name())
@click.argument("limit", type=Limit())
@actor_option
def limit(dsn: str | None, queue: str, limit: int | None, actor: str) -> None:
    """At most LIMIT steps of QUEUE run at once across every runner ('none': no limit)."""
    value = limit
    with open_engine(dsn) as engine, Session(engine) as s, s.begin():
        api.set_queue_limit(s, queue, value, actor=actor)
    click.echo(f"queue {queue!r}: " + ("no global limit" if value is None else f"limit {value}"))
