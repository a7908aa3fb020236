"""``gen-durable why ID|KEY``: why an instance is not running."""

from __future__ import annotations

from datetime import datetime

import attrs
import click

from gen_durable.cli import dsn_option, main, open_engine
from gen_durable.cli.instances import _emit, _fail, _target, json_option
from gen_durable.cli.operator import POSITIVE_SECONDS
from gen_durable.client.explain import explain
from gen_durable.errors import DurableError


@main.command()
@dsn_option
@click.argument("target")
@click.option(
    "--heartbeat-timeout",
    type=POSITIVE_SECONDS,
    default=60.0,
    show_default=True,
    help="Seconds without a heartbeat after which a runner counts as gone.",
)
@json_option
def why(dsn: str | None, target: str, heartbeat_timeout: float, as_json: bool) -> None:
    """Why is an instance (ID or correlation KEY) not running?

    Waiting for signals, backing off, blocked on its concurrency key, waiting for
    children, no live runner for its queue or class, or finished.
    """
    with open_engine(dsn) as engine, engine.connect() as conn:
        try:
            found = explain(conn, _target(target), heartbeat_timeout=heartbeat_timeout)
        except DurableError as exc:
            raise _fail(exc) from exc
    if as_json:
        _emit(attrs.asdict(found, recurse=True))
        return
    click.echo(found.summary)
    for key, value in (
        ("reason", found.reason),
        ("status", found.status.value),
        ("step", found.step),
        ("queue", found.queue),
        ("due", found.run_at.isoformat() if found.run_at else None),
        ("awaiting", ", ".join(found.awaiting) or None),
        ("pending signals", ", ".join(found.pending_signals) or None),
        ("held by", ", ".join(map(str, found.key_holders)) or None),
        ("children left", ", ".join(map(str, found.waiting_for_children)) or None),
        ("runners", ", ".join(found.runners) or None),
        ("rate bucket", found.rate_bucket),
        ("bucket tokens", None if found.rate_tokens is None else f"{found.rate_tokens:.2f}"),
        ("in debt until", _stamp(found.rate_debt_until)),
        ("can pay at", _stamp(found.rate_can_pay_at)),
        ("lease owner", found.lease_owner),
        ("lease until", _stamp(found.lease_expires_at)),
        ("last heartbeat", _stamp(found.runner_last_heartbeat)),
    ):
        if value is not None:
            click.echo(f"{key:>16}: {value}")


def _stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")
