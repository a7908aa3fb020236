"""Commands for upgrading code under running instances: upgrade-state, check-upgrade and
move."""

from __future__ import annotations

import importlib
import json
from typing import Any

import click

from gen_durable.cli import dsn_option, main, open_engine
from gen_durable.cli.operator import Limit, actor_option, interactive, progress
from gen_durable.client import upgrades
from gen_durable.domain import definitions

import_option = click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE so that its FSM and Job classes are known (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _import(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            hint = "--import"
            raise click.BadParameter(f"cannot import {name}: {exc}", param_hint=hint) from None


@main.command(name="upgrade-state")
@dsn_option
@click.argument("fsm", metavar="CLASS")
@import_option
@click.option(
    "--batch",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Rows per transaction.",
)
@json_option
def upgrade_state(
    dsn: str | None, fsm: str, imports: tuple[str, ...], batch: int, as_json: bool
) -> None:
    """Upgrade every unfinished row of CLASS to its code's state_version now.

    Safe while runners run: each batch is one transaction that skips the rows a runner
    holds (they are upgraded on load); a row parked by a failing upgrade runs again once
    it upgrades. Exit 1 when some row's upgrade fails (it keeps its old state).
    """
    _import(imports)
    cls = definitions.resolve(fsm)
    with open_engine(dsn) as engine:
        with engine.connect() as conn:
            total = upgrades.count_outdated(conn, cls)
        done: list[int] = []
        failed: list[tuple[int, str]] = []
        after = 0
        label = f"upgrading {cls.name} to state version {cls.state_version}"
        with progress(total, label, shown=interactive(as_json)) as advance:
            while True:
                with engine.begin() as conn:
                    step = upgrades.upgrade_batch(conn, cls, after_id=after, limit=batch)
                if step.last_id is None:
                    break
                after = step.last_id
                done += step.upgraded
                failed += step.failed
                advance(len(step.upgraded) + len(step.failed))
        with engine.connect() as conn:
            left = upgrades.count_outdated(conn, cls)
    report = {
        "fsm": cls.name,
        "state_version": cls.state_version,
        "upgraded": len(done),
        "failed": [{"id": i, "error": e} for i, e in failed],
        "left": left,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(
            f"{cls.name}: {len(done)} row(s) upgraded to state version {cls.state_version}, "
            f"{len(failed)} failed, {left} still older (running now, or failed)."
        )
        for i, e in failed[:10]:
            click.echo(f"  #{i}: {e}")
    if failed:
        raise SystemExit(1)


@main.command(name="check-upgrade")
@dsn_option
@import_option
@click.option(
    "--limit",
    type=Limit(),
    default=None,
    help="Check at most N live rows per class (the oldest); default: all.",
)
@json_option
def check_upgrade(
    dsn: str | None, imports: tuple[str, ...], limit: int | None, as_json: bool
) -> None:
    """Dry-run the imported code against the live rows, changing nothing.

    Per class and step: rows current, that would upgrade, fail (with the first errors)
    or be stranded (a step with no alias, or a state version the code cannot load).
    Exit 1 when any row would fail or be stranded, 0 otherwise, 3 when the database is
    unreachable.
    """
    _import(imports)
    classes = sorted(definitions.registered().values(), key=lambda c: c.name)
    if not classes:
        raise click.UsageError("no FSM or Job class to check: pass --import MODULE")
    with open_engine(dsn) as engine, engine.connect() as conn:
        reports = upgrades.check_upgrade(conn, classes, limit=limit)
    bad = sum(r.bad for r in reports)
    if as_json:
        data = {"ok": bad == 0, "classes": [r.as_json() for r in reports]}
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        for r in reports:
            _print_class(r)
        click.echo("OK: every live row would run." if bad == 0 else f"FAIL: {bad} row(s).")
    if bad:
        raise SystemExit(1)


def _print_class(report: upgrades.ClassCheck) -> None:
    click.echo(f"{report.fsm} (state version {report.state_version}): {report.rows} live row(s)")
    for name, s in sorted(report.steps.items()):
        counts: dict[str, Any] = attrs_counts(s)
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        click.echo(f"  {name}: {shown}")
        for e in s.errors:
            click.echo(f"    #{e['id']} (version {e['state_version']}): {e['error']}")


def attrs_counts(s: upgrades.StepCheck) -> dict[str, int]:
    """A step's counts, in report order."""
    return {"current": s.current, "upgrade": s.upgrade, "fail": s.fail, "stranded": s.stranded}


@main.command(name="move")
@dsn_option
@click.argument("target", metavar="ID")
@click.option("--to", "step", required=True, help="The step to put the instance at.")
@import_option
@actor_option
def move(dsn: str | None, target: str, step: str, imports: tuple[str, ...], actor: str) -> None:
    """Move an unfinished instance (by ID or correlation KEY) to step --to, runnable now.

    For an instance stranded on a step its code no longer has, or parked by a failing
    upgrade. Recorded in the audit table as ``move``.
    """
    _import(imports)
    with open_engine(dsn) as engine, engine.begin() as conn:
        moved = upgrades.move(conn, int(target) if target.isdigit() else target, step, actor=actor)
    click.echo(f"moved instance {moved} to step {step!r}")
