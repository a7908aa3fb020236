"""Upgrading code under running instances: eager state upgrades, the dry run of an
upgrade against live rows, and moving an instance to another step.

Each function works in the caller's transaction; the command line runs the batches of
an eager upgrade in transactions of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import attrs

from gen_durable import store
from gen_durable.client import targets
from gen_durable.client.targets import Bind, check_actor, check_target, connection, not_found
from gen_durable.domain import definitions, serialization, versioning
from gen_durable.errors import InvalidTransition, NotFound, ValidationError

__all__ = ["Batch", "ClassCheck", "StepCheck", "check_upgrade", "move", "upgrade_batch"]

FIRST_ERRORS = 5
"""Errors kept per class and step in a report (the first ones met, by id)."""


@attrs.frozen
class Batch:
    """One batch of an eager upgrade: the last id it looked at (None: no row was left),
    the ids it upgraded, and those whose upgrade failed with their error."""

    last_id: int | None
    upgraded: tuple[int, ...]
    failed: tuple[tuple[int, str], ...]
    queues: frozenset[str] = frozenset()


def upgrade_batch(
    bind: Bind,
    definition: type[definitions.Definition] | str,
    *,
    after_id: int = 0,
    limit: int = 500,
    now: datetime | None = None,
) -> Batch:
    """Upgrade the next ``limit`` outdated unfinished rows of a class (ids above
    ``after_id``) to its ``state_version`` and write them back, in the caller's
    transaction.

    Rows a runner holds or is committing are skipped (``FOR UPDATE SKIP LOCKED``, and
    never a running one): that runner upgrades them on load. A row whose upgrade fails
    keeps its JSON and version; a parked row that now upgrades becomes runnable again.
    """
    targets.check_now(now)
    cls = definitions.resolve(definition)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValidationError(f"limit must be an int >= 1, got {limit!r}")
    conn = connection(bind)
    rows = store.upgrades.lock_outdated(conn, cls.name, cls.state_version, after_id, limit)
    good: list[tuple[int, str]] = []
    failed: list[tuple[int, str]] = []
    for row in rows:
        try:
            data = versioning.upgrade(cls, row.state, row.state_version)
        except versioning.StateUpgradeFailed as exc:
            failed.append((row.id, str(exc)))
            continue
        good.append((row.id, serialization.dumps(data)))
    written = store.upgrades.write_upgraded(conn, good, cls.state_version, now)
    queues = frozenset(r.queue for r in written)
    store.notify.notify(conn, queues)
    return Batch(
        last_id=rows[-1].id if rows else None,
        upgraded=tuple(r.id for r in written),
        failed=tuple(failed),
        queues=queues,
    )


def count_outdated(bind: Bind, definition: type[definitions.Definition] | str) -> int:
    """How many unfinished rows of a class are in a state version below its code's."""
    cls = definitions.resolve(definition)
    return store.upgrades.count_outdated(connection(bind), cls.name, cls.state_version)


Verdict = Literal["current", "upgrade", "fail", "stranded"]


@attrs.define
class StepCheck:
    """What the dry run found for the live rows of one class at one step."""

    step: str
    current: int = 0
    """Rows already in the code's state version that load."""
    upgrade: int = 0
    """Rows in an older version whose upgrade and typed load succeed."""
    fail: int = 0
    """Rows whose upgrade or typed load fails."""
    stranded: int = 0
    """Rows the new code would never run: an unknown step (no alias) or state version."""
    errors: list[dict[str, Any]] = attrs.field(factory=list)


@attrs.define
class ClassCheck:
    """The dry run's report for one class."""

    fsm: str
    state_version: int
    rows: int = 0
    steps: dict[str, StepCheck] = attrs.field(factory=dict)

    @property
    def bad(self) -> int:
        """Rows that would fail or be stranded."""
        return sum(s.fail + s.stranded for s in self.steps.values())

    def as_json(self) -> dict[str, Any]:
        """The report as JSON (``check-upgrade --json``)."""
        return {
            "fsm": self.fsm,
            "state_version": self.state_version,
            "rows": self.rows,
            "steps": {name: attrs.asdict(s) for name, s in self.steps.items()},
        }


def check_upgrade(
    bind: Bind,
    classes: Iterable[type[definitions.Definition]],
    *,
    limit: int | None = None,
) -> list[ClassCheck]:
    """Dry-run the code's classes against the live rows: per class and step, how many
    rows are current, would upgrade, would fail (with the first errors) or would be
    stranded. Changes nothing (read-only, in the caller's transaction). ``limit``:
    at most that many rows per class, the oldest first."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValidationError(f"limit must be an int >= 1 or None, got {limit!r}")
    conn = connection(bind)
    return [_check(cls, store.upgrades.live_rows(conn, cls.name, limit)) for cls in classes]


def _check(cls: type[definitions.Definition], rows: Iterable[Any]) -> ClassCheck:
    report = ClassCheck(cls.name, cls.state_version)
    for row in rows:
        report.rows += 1
        at = report.steps.setdefault(row.step, StepCheck(row.step))
        verdict, error = _verdict(cls, row)
        setattr(at, verdict, getattr(at, verdict) + 1)
        if error is not None and len(at.errors) < FIRST_ERRORS:
            at.errors.append({"id": row.id, "state_version": row.state_version, "error": error})
    return report


def _verdict(cls: type[definitions.Definition], row: Any) -> tuple[Verdict, str | None]:
    unknown = [s for s in (row.step, row.timeout_step) if s and not versioning.resolve_step(cls, s)]
    if unknown:
        return "stranded", f"step {unknown[0]!r} is neither a step nor an alias of {cls.name}"
    if row.state_version not in cls._gd_known_versions:
        known = cls._gd_known_versions
        return "stranded", (
            f"state version {row.state_version} is unknown to this code "
            f"(it knows {known[0]} to {known[-1]})"
        )
    try:
        versioning.upgrade(cls, row.state, row.state_version)
    except versioning.StateUpgradeFailed as exc:
        return "fail", str(exc)
    return ("current" if row.state_version == cls.state_version else "upgrade"), None


def move(
    bind: Bind,
    target: int | str,
    step: str,
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> int:
    """Put an unfinished instance at ``step``, runnable now; returns its id.

    For a row stranded on a step its code no longer has, or parked by a failing upgrade
    (its stored error is cleared). The step must be one its class's code declares — the
    class registered here, or else one a live runner's code knows. Its await, backoff
    and attempts are cleared. Raises :class:`InvalidTransition` for a running instance
    or one waiting for its children. Recorded in the audit table as ``move``.
    """
    targets.check_now(now)
    target = check_target(target)
    check_actor(actor)
    serialization.check_text(step, "step")
    conn = connection(bind)
    instance_id = store.instances.resolve_read(conn, target)
    row = store.upgrades.lock_movable(conn, instance_id) if instance_id is not None else None
    if row is None:
        raise NotFound(not_found(target, live=True))
    _check_step(conn, row, step)
    if row.join_policy is not None:
        raise InvalidTransition(f"instance {row.id} waits for its children; it cannot be moved")
    if not store.upgrades.move(conn, row.id, step, now):
        raise InvalidTransition(f"instance {row.id} is running; move it once its step ends")
    store.notify.notify(conn, [row.queue])
    details = {"from": row.step, "to": step}
    store.audit.record(
        conn, "move", target=target, instance_id=row.id, actor=actor, details=details, now=now
    )
    return row.id


def _check_step(conn: Any, row: store.upgrades.Movable, step: str) -> None:
    cls = definitions.lookup(row.fsm)
    if cls is not None:
        if step not in cls._gd_steps:
            raise ValidationError(f"{row.fsm} has no step {step!r} (its steps: {cls._gd_steps})")
        return
    for known in store.upgrades.known_by_live_runners(conn, row.fsm):
        if step in known.get("steps", ()):
            return
    raise ValidationError(
        f"no code here or on a live runner declares step {step!r} of {row.fsm} "
        "(pass --import MODULE to check it against the class)"
    )


def runner_problem(row: Any, knowing: Sequence[Any]) -> tuple[Any, str] | None:
    """For ``why``: the live runners that know the class of ``row`` (a live node each)
    all lack its state version or its step — a rolling deploy that is not done."""
    recorded = [n.known for n in knowing]
    if not recorded or any(k is None for k in recorded):
        return None  # a runner that records nothing (an older one) claims it anyway
    of_class = [k.get(row.fsm) or {} for k in recorded]
    versions = sorted({v for k in of_class for v in k.get("versions", ())})
    if not any(row.state_version in k.get("versions", ()) for k in of_class):
        return "unknown_version", (
            f"no live runner knows version {row.state_version} of {row.fsm}'s state (they "
            f"know {', '.join(map(str, versions)) or 'none'}): deploy the code that "
            "declares it, or upgrade the state (gen-durable upgrade-state)."
        )
    if not any(row.step in k.get("steps", ()) for k in of_class):
        return "unknown_step", (
            f"no live runner's code declares step {row.step!r} of {row.fsm} or an alias "
            f"for it: deploy code that does, or move it (gen-durable move {row.id} --to STEP)."
        )
    return None


def parked(row: Any) -> str:
    """For ``why``: the sentence of a row parked by a failing upgrade."""
    error = row.error if isinstance(row.error, dict) else {}
    return (
        f"is parked at step {row.step!r} in state version {row.state_version}: "
        f"{error.get('type')}: {error.get('message')}. It is not run again until its "
        f"state upgrades: fix the upgrade function, then run gen-durable upgrade-state "
        f"{row.fsm} (or move it: gen-durable move {row.id} --to STEP)."
    )
