"""``cancel`` and ``retry`` (by ids, or by filter in resumable batches), ``prune``, and
``queues`` (each queue's settings and depth)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import attrs
import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gen_durable import client as api
from gen_durable import store
from gen_durable.cli import dsn_option, main, open_engine
from gen_durable.cli.instances import _emit, _fail, _table, _target, json_option
from gen_durable.cli.operator import SECONDS, Name, actor_option, interactive, progress
from gen_durable.client.bulk import (
    ACTIONS,
    BulkAction,
    BulkFilter,
    bulk_preview,
    bulk_start,
    bulk_step,
)
from gen_durable.client.fleet import queues as queue_views
from gen_durable.errors import DurableError, NotFound

_FILTERS = ("class_name", "status", "step", "queue", "older_than", "correlation_key_prefix")


def _filter_options(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options that select instances by filter, and how a bulk run goes."""
    options = [
        click.argument("targets", nargs=-1),
        click.option("--class", "class_name", type=Name(), help="Registry name of the class."),
        click.option("--status", type=click.Choice(ACTIONS[action]), help="Only this status."),
        click.option("--step", type=Name(), help="Only instances at this step."),
        click.option("--queue", type=Name(), help="Only this queue."),
        click.option(
            "--older-than",
            type=SECONDS,
            help="Only instances unchanged for at least these seconds (their updated_at).",
        ),
        click.option(
            "--correlation-key-prefix",
            type=Name(),
            help="Only instances whose correlation key starts with it (literally).",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print how many instances match and a sample; act on none.",
        ),
        click.option(
            "--resume",
            "resume_id",
            type=click.IntRange(min=1),
            metavar="AUDIT_ID",
            help="Go on with an interrupted bulk action (its audit id) after its last batch.",
        ),
        click.option(
            "--batch",
            default=500,
            show_default=True,
            type=click.IntRange(1, 10_000),
            help="Instances per transaction of a bulk run.",
        ),
        click.option("--yes", is_flag=True, help="Do not ask before a bulk run on a terminal."),
        actor_option,
        json_option,
        dsn_option,
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


@main.command()
@_filter_options("cancel")
@click.option(
    "--reason",
    default="cancelled by operator",
    show_default=True,
    help="Stored as each instance's error.",
)
def cancel(targets: tuple[str, ...], reason: str, **options: Any) -> None:
    """Cancel unfinished instances: TARGETS (ids or correlation keys), or every one the
    filter options match, in batches (a running step's commit is fenced out).

    A bulk cancel counts the matches first and never touches an instance created after
    that; --dry-run only counts. Interrupted, it resumes with --resume AUDIT_ID.
    """
    _run("cancel", targets, options, reason)


@main.command()
@_filter_options("retry")
def retry(targets: tuple[str, ...], **options: Any) -> None:
    """Run failed or cancelled instances again from the step they ended at: TARGETS (ids
    or correlation keys), or every one the filter options match, in batches.

    Attempts start over. A step that ended while awaiting resumes with the same signals
    (its pack) it had: what it awaited is not awaited again. Interrupted, a bulk retry
    resumes with --resume AUDIT_ID.
    """
    _run("retry", targets, options, None)


def _run(
    action: BulkAction, targets: tuple[str, ...], options: dict[str, Any], reason: str | None
) -> None:
    given = {k: options[k] for k in _FILTERS if options[k] is not None}
    resume_id = options["resume_id"]
    if sum(map(bool, (targets, given, resume_id))) != 1:
        raise click.UsageError(
            f"{action} takes instance ids or keys, or filter options, or --resume AUDIT_ID "
            "(exactly one of them)"
        )
    if (targets or resume_id) and options["dry_run"]:
        raise click.UsageError("--dry-run previews a filter: give filter options")
    with open_engine(options["dsn"]) as engine:
        if targets:
            _each(engine, action, targets, options["actor"], reason)
            return
        if resume_id is None:
            where = BulkFilter(**given)
            with engine.connect() as conn:
                preview = bulk_preview(conn, action, where)
            if options["dry_run"] or not preview.count:
                _said_preview(action, preview, options["as_json"])
                return
            if not options["yes"] and interactive(options["as_json"]) and sys.stdin.isatty():
                click.confirm(f"{action} {preview.count} instance(s)?", abort=True)
            with engine.begin() as conn:
                resume_id = bulk_start(
                    conn,
                    action,
                    where,
                    bound=preview.bound,
                    expected=preview.count,
                    actor=options["actor"],
                    reason=reason or "cancelled by operator",
                )
            expected: int | None = preview.count
            already = 0
        else:
            with engine.connect() as conn:
                found = store.bulk.lock_audit_row(conn, resume_id)
            if found is None or found.action != f"bulk_{action}":
                raise _fail(NotFound(f"no bulk {action} has audit id {resume_id}"))
            expected = found.details.get("expected")
            already = found.details.get("done", 0)
        _batches(engine, action, resume_id, (expected, already), options)


def _each(
    engine: Engine, action: str, targets: tuple[str, ...], actor: str, reason: str | None
) -> None:
    """The single form, one transaction per target (the output of one target unchanged)."""
    for target in targets:
        with Session(engine) as s, s.begin():
            try:
                if action == "cancel":
                    done = api.cancel(s, _target(target), reason or "cancelled", actor=actor)
                    said = "cancelled" if done else "already finished: nothing to cancel"
                else:
                    said = _retried(s, api.retry(s, _target(target), actor=actor))
            except DurableError as exc:
                raise _fail(exc) from exc
        click.echo(said if len(targets) == 1 else f"{target}: {said}")


def _retried(session: Session, instance_id: int) -> str:
    """What a retry made of the instance: a cancelled one resumes where it was."""
    snap = api.get(session, instance_id)
    if snap.status == "awaiting":
        return f"instance {instance_id} awaits its signals again"
    if snap.status == "scheduled":
        until = snap.run_at.isoformat(timespec="seconds") if snap.run_at else "its time"
        return f"instance {instance_id} is scheduled again, until {until}"
    return f"instance {instance_id} is runnable again"


def _said_preview(action: str, preview: Any, as_json: bool) -> None:
    if as_json:
        _emit(attrs.asdict(preview))
        return
    click.echo(
        f"would {action} {preview.count} instance(s)"
        + (
            f" (ids up to {preview.bound}); for example: {', '.join(map(str, preview.sample))}"
            if preview.count
            else ""
        )
    )


def _batches(
    engine: Engine,
    action: str,
    audit_id: int,
    counts: tuple[int | None, int],
    options: dict[str, Any],
) -> None:
    """Batch after batch, each committed on its own, with a progress bar on a terminal."""
    shown = interactive(options["as_json"])
    hint = f"interrupted: go on with gen-durable {action} --resume {audit_id}"
    step = None
    try:
        expected, already = counts  # on a resume, the bar starts where the action got to
        with progress(expected, f"{action} #{audit_id}", shown=shown) as advance:
            advance(already)
            while step is None or not step.done:
                with engine.begin() as conn:
                    step = bulk_step(conn, audit_id, batch=options["batch"])
                advance(len(step.ids))
    except KeyboardInterrupt:
        click.echo(hint, err=True)
        sys.exit(130)
    except BaseException:
        click.echo(hint, err=True)
        raise
    with engine.connect() as conn:
        row = store.bulk.lock_audit_row(conn, audit_id)
    details = row.details if row is not None else {}
    result = {"audit_id": audit_id, "done": details.get("done"), "skipped": details.get("skipped")}
    if options["as_json"]:
        _emit(result)
        return
    past = "cancelled" if action == "cancel" else "retried"
    skipped = f", {result['skipped']} skipped (changed meanwhile)" if result["skipped"] else ""
    click.echo(f"{past} {result['done']} instance(s){skipped}; audit id {audit_id}")


@main.command()
@dsn_option
@click.option(
    "--older-than",
    type=SECONDS,
    default=7 * 86400,
    show_default=True,
    help="Seconds since an instance finished.",
)
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Instances deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Print how many instances would be deleted.")
@actor_option
def prune(dsn: str | None, older_than: float, batch: int, dry_run: bool, actor: str) -> None:
    """Delete finished instances (with their signals and history) that finished long
    enough ago, a batch per transaction.

    One audit row records the prune; each batch adds what it deleted to it, in its own
    transaction, so the row counts exactly what was deleted.
    """
    total = 0
    shown = interactive()
    with open_engine(dsn) as engine:
        due = None
        if shown or dry_run:
            with engine.connect() as conn:
                due = store.maintenance.count_garbage(conn, older_than, None)
        if dry_run:
            click.echo(f"would prune {due} finished instance(s)")
            return
        audit_id = None
        with progress(due, "pruning", shown=shown) as advance:
            while True:
                with engine.begin() as conn:
                    deleted = store.maintenance.collect_garbage(conn, older_than, batch, None)
                    if audit_id is None:
                        details = {"older_than": older_than, "deleted": deleted}
                        audit_id = store.audit.record(conn, "prune", actor=actor, details=details)
                    elif deleted:
                        store.audit.add_count(conn, audit_id, "deleted", deleted)
                total += deleted
                advance(deleted)
                if deleted < batch:
                    break
    click.echo(f"pruned {total} finished instance(s)")


@main.command()
@dsn_option
@json_option
def queues(dsn: str | None, as_json: bool) -> None:
    """Every queue: paused, its global limit, its instances by status, how long the oldest
    runnable one has waited, and whether a live runner serves it (see ``stats`` for
    per-step figures and throughput)."""
    with open_engine(dsn) as engine, engine.connect() as conn:
        views = [attrs.asdict(q) for q in queue_views(conn)]
    if as_json:
        _emit(views)
        return
    for view in views:
        counts = view.pop("counts")
        view["depth"] = ",".join(f"{s}={n}" for s, n in sorted(counts.items())) or "-"
        age = view.pop("oldest_waiting_age")
        view["oldest_waiting"] = "-" if age is None else f"{age:.0f}s"
        view["paused"] = "paused" if view["paused"] else ""
        view["served"] = "yes" if view["served"] else "NO LIVE RUNNER"
    _table(views, ["name", "paused", "limit", "depth", "oldest_waiting", "served"])
