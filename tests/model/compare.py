"""Each instance's observed trail against the model's; a report for every difference.

The model gets each instance's observed events (:mod:`model.observe`) and, for a parent,
the outcomes the model computed for its children (in spawn order, matched to the
children the engine inserted by id). Compared, per instance: the committed transitions
(exactly, attempts included), the runs with their packs and children (a run the model
says crashed or was cancelled may have left no record: its process died first), each
signal's name and ``consumed_version``, the duplicates reported to senders, and the final
status, step, version, state, result and error type.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import attrs

from model import model
from model.observe import Observed
from model.records import ChildOutcome, Event, Trail, Unpredictable, lookup

FINISHED = ("done", "failed", "cancelled")


@attrs.define
class Case:
    """One instance: what the model computed and what the engine did."""

    id: int
    path: str
    """Plan ordinal, then spawn version and position per level: "17/2.0"."""
    cls: str
    state: Any
    observed: Observed
    trail: Trail
    children: dict[int, list[ChildOutcome | None]] = attrs.Factory(dict)

    def outcome(self, holds: bool) -> ChildOutcome | None:
        t = self.trail
        if t.status not in FINISHED:
            return None
        return ChildOutcome(t.status, t.result, t.error, holds)


def expected(found: dict[int, Observed], roots: list[int], plans: list[Any]) -> dict[int, Case]:
    """The model's trail of every instance reached from ``roots`` (top-level ids)."""
    cases: dict[int, Case] = {}

    def expect(iid: int, cls: str, state: Any, path: str) -> Case:
        obs = found[iid]
        script = state if cls.endswith("Task") else state["script"]
        if script.get("dup"):  # born failed: an unfinished instance holds its key
            trail = Trail(status="failed", step=lookup(cls)._gd_initial, state=state)
            trail.error = "DuplicateInstance"
            cases[iid] = Case(iid, path, cls, state, obs, trail)
            return cases[iid]
        kids: Iterator[int] = iter(obs.children)
        memo: dict[int, list[ChildOutcome | None]] = {}

        def children(version: int, specs: Any) -> list[ChildOutcome | None]:
            if version not in memo:
                memo[version] = []
                for n, spec in enumerate(specs):
                    cid = next(kids, None)
                    if cid is None:
                        memo[version].append(None)
                        continue
                    child = expect(cid, spec.cls.name, spec.state, f"{path}/{version}.{n}")
                    hold = bool((child.state.get("script") or {}).get("hold"))
                    memo[version].append(child.outcome(hold))
            return memo[version]

        try:
            trail = model.run(lookup(cls), state, obs.events, children)
        except Unpredictable as exc:  # the engine ran a workload the model cannot decide
            trail = Trail(problem=f"unpredictable: {exc}", state=state)
        cases[iid] = Case(iid, path, cls, state, obs, trail, memo)
        return cases[iid]

    for n, (iid, plan) in enumerate(zip(roots, plans, strict=True)):
        expect(iid, plan["cls"], {"script": plan["script"], "seen": []}, str(n))
    return cases


def _runs(case: Case) -> tuple[list[Any], list[Any]]:
    model_runs = [(r.version, r.attempt, r.step, r.pack, r.children) for r in case.trail.runs]
    return _json(model_runs), _json(case.observed.runs)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def run_difference(case: Case) -> int | None:
    """Index of the first model run the observed runs do not match (None: they match)."""
    model_runs, seen = _runs(case)
    i = 0
    for n, (run, meta) in enumerate(zip(model_runs, case.trail.runs, strict=True)):
        if i < len(seen) and seen[i] == run:
            i += 1
        elif meta.end == "commit":
            return n
    return None if i == len(seen) else len(model_runs)


def final(t: Trail | Observed) -> dict[str, Any]:
    return {
        "status": t.status,
        "step": t.step,
        "version": t.version,
        "state": t.state,
        "result": t.result if t.status == "done" else None,
        "error": t.error if t.status in ("failed", "cancelled") else None,
    }


def differences(case: Case) -> list[str]:
    """What differs between the model's trail and the engine's (empty: nothing)."""
    t, o = case.trail, case.observed
    out = [f"the model stopped: {t.problem}"] if t.problem else []
    if t.commits != o.commits:
        first = next(i for i, (a, b) in enumerate(zip_longest(t.commits, o.commits)) if a != b)
        out.append(f"transition {first} differs")
    at = run_difference(case)
    if at is not None:
        out.append(f"run {at} differs")
    signals = {i: (name, t.consumed.get(i)) for i, name in t.stored.items()}
    if signals != o.signals:
        wrong = sorted(set(signals.items()) ^ set(o.signals.items()), key=str)
        out.append(f"signals (id, (name, consumed_version)) differ: {wrong}")
    if t.sends != o.sends:
        out.append(f"duplicates reported {o.sends}, the model says {t.sends}")
    mine, theirs = _json(final(t)), _json(final(o))
    if mine != theirs:
        diff = {k: (_short(v), _short(theirs[k])) for k, v in mine.items() if v != theirs[k]}
        out.append(f"final (model, engine) differ: {diff}")
    spawned = sum(len(specs) for _, specs in t.spawns)
    if len(o.children) != spawned and not t.problem:
        out.append(f"{len(o.children)} children exist, the model spawned {spawned}")
    return out


def side_by_side(left: list[Any], right: list[Any], width: int = 64) -> list[str]:
    rows = [f"    {'model':<{width}} | engine"]
    for a, b in zip_longest(left, right):
        mark = "  " if a == b else "!!"
        rows.append(f"{mark}  {_short(a):<{width}} | {_short(b)}")
    return rows


def _short(item: Any) -> str:
    return "" if item is None else str(tuple(item) if isinstance(item, list) else item)[:140]


def report(case: Case, seed: int, problems: list[str], shrunk: list[Event]) -> str:
    """Everything needed to understand and replay one instance's disagreement."""
    t, o = case.trail, case.observed
    commits = [attrs.astuple(c) for c in t.commits]
    observed_commits = [attrs.astuple(c) for c in o.commits]
    model_runs, seen = _runs(case)
    path = save(case, seed)
    lines = [
        f"instance {case.id} ({case.cls}, plan {case.path}) of seed {seed}: " + "; ".join(problems),
        f"script: {json.dumps(case.state)}",
        "events (kind, h, status, signals):",
        *map(shown, o.events),
        "transitions (version, attempt, from, kind, to, status):",
        *side_by_side(commits, observed_commits),
        "runs (version, attempt, step, pack, children):",
        *side_by_side(model_runs, seen),
        f"shrunk against the model alone, {len(shrunk)} of {len(o.events)} events still diverge:",
        *map(shown, shrunk),
        f"replay the model: PYTHONPATH=tests .venv/bin/python -m model.replay {path}",
        f"replay the run:   GD_MODEL_SEED={seed} .venv/bin/pytest tests/model/test_equivalence.py",
    ]  # fmt: skip
    return "\n".join(lines)


def shown(e: Event) -> str:
    return f"    {e.kind} h={e.h} {e.status} {[attrs.astuple(s) for s in e.signals]}"


def save(case: Case, seed: int) -> Path:
    """Write the case (model inputs and what was observed) for ``python -m model.replay``."""
    folder = Path(os.environ.get("GD_MODEL_FAILURES", "build/model-failures"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"seed{seed}-instance{case.id}.json"
    o = case.observed
    data = {
        "cls": case.cls,
        "state": case.state,
        "events": [attrs.asdict(e) for e in o.events],
        "children": {v: [None if c is None else attrs.asdict(c) for c in cs]
                     for v, cs in case.children.items()},
        "observed": {"commits": [attrs.astuple(c) for c in o.commits], "runs": o.runs,
                     "final": final(o)},
    }  # fmt: skip
    path.write_text(json.dumps(data, indent=1, default=list))
    return path


def shrink(case: Case) -> list[Event]:
    """The fewest of the instance's events (and signals in its sends) on which the model
    still disagrees with the engine at the same place, in the same way, and which still
    send every signal the engine's runs show up to there (against the model alone)."""
    events = list(case.observed.events)
    target = _where(case, events)
    if target is None:
        return events
    needed = {i for run in case.observed.runs[: target[1] + 1] for i in run[3]}
    changed = True
    while changed:
        changed = False
        for trial in _smaller(events):
            sent = {s.id for e in trial for s in e.signals}
            if needed <= sent and _where(case, trial) == target:
                events, changed = trial, True
                break
    return events


def _smaller(events: list[Event]) -> Iterator[list[Event]]:
    """Each list with one event less, or one signal less in one send."""
    for n, e in enumerate(events):
        yield events[:n] + events[n + 1 :]
        for k in range(len(e.signals) if len(e.signals) > 1 else 0):
            fewer = attrs.evolve(e, signals=e.signals[:k] + e.signals[k + 1 :])
            yield [*events[:n], fewer, *events[n + 1 :]]


def _where(case: Case, events: list[Event]) -> tuple[Any, ...] | None:
    """Where and how the model on ``events`` first disagrees with the engine."""
    try:
        trail = model.run(lookup(case.cls), case.state, events, lambda v, s: case.children[v])
    except Exception as exc:  # a reduction the model refuses is not a reproduction
        return ("refused", repr(exc))
    probe = attrs.evolve(case, trail=trail)
    for n, (a, b) in enumerate(zip_longest(trail.commits, case.observed.commits)):
        if a != b:
            return ("commit", n, a, b)
    at = run_difference(probe)
    if at is not None:
        model_runs, _ = _runs(probe)
        return ("run", at, model_runs[at] if at < len(model_runs) else None)
    return ("problem", trail.problem) if trail.problem else None


@attrs.define
class Verdict:
    figures: dict[str, Any]
    reports: list[str]
    cases: dict[int, Case]

    def assert_ok(self) -> None:
        assert not self.reports, "\n\n".join(self.reports[:5])


def check(
    found: dict[int, Observed], roots: list[int], plans: list[Any], seed: int, *, kills: int = 0
) -> Verdict:
    """Compare every instance; report (at most ``MAX_REPORTS``) the ones that differ.

    Without ``kills`` no lease may have expired: the model would account for a lost lease
    exactly, but with no runner killed one is a fault of its own.
    """
    cases = expected(found, roots, plans)
    reports, mismatches = [], 0
    for case in cases.values():
        problems = differences(case)
        lost = sum(e.kind == "crash" for e in case.observed.events)
        if lost and not kills:
            problems.append(f"{lost} leases expired, and no runner was killed")
        if problems:
            mismatches += 1
            if len(reports) < MAX_REPORTS:
                reports.append(report(case, seed, problems, shrink(case)))
    unchecked = sorted(set(found) - set(cases))
    if unchecked:
        mismatches += len(unchecked)
        reports.append(f"instances no plan accounts for: {unchecked[:20]}")
    runs = sum(len(o.runs) for o in found.values())
    commits = sum(len(o.commits) for o in found.values())
    events = [e for o in found.values() for e in o.events]
    return Verdict(
        {
            "instances": len(roots),
            "children": len(found) - len(roots),
            "transitions": commits,
            "runs": runs,
            "re_runs": sum(r.end != "commit" for c in cases.values() for r in c.trail.runs),
            "lease_expiries": sum(e.kind == "crash" for e in events),
            "signals": sum(len(e.signals) for e in events),
            "timeouts": sum(e.kind == "timeout" for e in events),
            "cancels": sum(e.kind in ("cancel", "cascade") for e in events),
            "retries": sum(e.kind == "retry" for e in events),
            "mismatches": mismatches,
        },
        reports,
        cases,
    )


MAX_REPORTS = 10
