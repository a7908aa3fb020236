"""Which rules of the contract a run of the workload exercised, counted from the trails.

The counts come from the model's trails and the observed events; when the check found no
mismatch, the engine did exactly the same. A test requires each of :data:`RULES` to have
happened at least once, so a workload that stopped covering a rule fails loudly.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs

from model.compare import Case

RULES = (
    "commit:next",
    "commit:await",
    "commit:sleep",
    "commit:spawn",
    "commit:rate_limited",
    "commit:retry",
    "commit:error",
    "commit:done",
    "commit:fail",
    "commit:cancel",
    "commit:timeout",
    "commit:outside_cancel",
    "pack:any",
    "pack:all",
    "pack:limit",
    "resumed without parking",
    "woken while parked",
    "re-run with its first pack",
    "re-run after newer matching signals",
    "timeout",
    "timeout to on_timeout",
    "compensated by on_error",
    "spawn:wait",
    "spawn:fail_fast",
    "spawn:cancel_rest",
    "nested spawn",
    "child born failed",
    "child held",
    "cancel:awaiting",
    "retry:failed",
    "retry:cancelled",
    "await resumed by a retry",
    "duplicate",
    "left over",
    "signal-with-start",
)
"""What every run of the fast tier must have exercised. Not required, because whether
they happen is timing: signals landing while a step runs (counted as "sent while
running"), a cancel that catches a step holding its pack ("cancelled holding its pack":
the poll must see it running or backing off) and lost leases (the long tier's kills make
them)."""


def _spec(case: Case, version: int, kind: str) -> dict[str, Any] | None:
    """The outcome of ``kind`` the visit at ``version`` returns (or its on_error does)."""
    visits = case.state.get("script", case.state).get("visits", [])
    visit = visits[version] if 0 <= version < len(visits) else {}
    for spec in (visit.get("do"), visit.get("on_error")):
        if spec and spec["kind"] == kind:
            return dict(spec)
    return None


def count(cases: dict[int, Case], plans: list[dict[str, Any]]) -> Counter[str]:
    """How often each rule was exercised (a key per rule of :data:`RULES`, and more)."""
    found: Counter[str] = Counter()
    found["signal-with-start"] = sum(p["create"] == "start" for p in plans)
    for case in cases.values():
        t, events = case.trail, case.observed.events
        script = case.state.get("script", case.state)
        found["child born failed"] += bool(script.get("dup"))
        found["child held"] += bool(script.get("hold"))
        found["nested spawn"] += case.path.count("/") == 1 and bool(t.spawns)
        found.update(f"commit:{c.kind}" for c in t.commits)
        for version, _ in t.spawns:
            found[f"spawn:{(_spec(case, version, 'spawn') or {}).get('policy')}"] += 1
        visits = script.get("visits", [])
        found["compensated by on_error"] += sum(
            c.kind not in ("retry", "error", "rate_limited")
            and c.version < len(visits) and bool(visits[c.version].get("exhaust"))
            for c in t.commits
        )  # fmt: skip
        found["cancelled holding its pack"] += script.get("cancel_when") == "packed" and any(
            e.kind == "cancel" and e.status != "awaiting" for e in events
        )
        retried = {e.h for e in events if e.kind == "retry" and e.status == "cancelled"}
        found["await resumed by a retry"] += any(
            e.kind == "send" and e.status == "awaiting" and e.h in retried for e in events
        )
        for e in events:
            found[f"{e.kind}:{e.status}" if e.kind in ("cancel", "retry") else e.kind] += 1
            found["woken while parked"] += e.kind == "send" and e.status == "awaiting"
            found["sent while running"] += e.kind == "send" and e.status == "running"
            found["left over"] += e.kind == "send" and e.status in ("done", "failed", "cancelled")
        found["duplicate"] += sum(dup for _, dup in t.sends)
        _packs(case, found)
    return found


NO_STEP = ("timeout", "lease_expired", "outside_cancel")
"""Kinds of the history rows no run committed."""


def _packs(case: Case, found: Counter[str]) -> None:
    """Packs: built (any, all, cut by limit), kept on re-runs, empty after a timeout."""
    t = case.trail
    # Each event's anchor, counted like ``h`` below: in the transitions its runs committed.
    events = [
        attrs.evolve(e, h=e.h - sum(c.kind in NO_STEP for c in t.commits[: e.h]))
        for e in case.observed.events
    ]
    first: dict[int, int] = {}  # version -> transitions committed before its first claim
    h = 0
    for run in t.runs:
        wait = _spec(case, run.version - 1, "await")
        if run.version in first and run.pack and wait is not None:
            found["re-run with its first pack"] += 1
            found["re-run after newer matching signals"] += any(
                s.name in wait["names"] and s.id > max(run.pack)
                for e in events
                if e.kind == "send" and first[run.version] <= e.h <= h
                and (e.h > first[run.version] or e.status == "running")
                for s in e.signals
            )  # fmt: skip
        elif run.version not in first and wait is not None:
            first[run.version] = h
            if not run.pack:
                timed = any(e.kind == "timeout" and e.h == h for e in events)
                found["timeout to on_timeout"] += timed and run.step == wait["on_timeout"]
            else:
                found["pack:all" if wait["all"] else "pack:any"] += 1
                found["pack:limit"] += bool(wait["limit"]) and len(run.pack) == wait["limit"]
                woken = any(
                    e.kind == "send" and e.h == h and e.status == "awaiting" for e in events
                )
                found["resumed without parking"] += not woken
        first.setdefault(run.version, h)
        h += run.end == "commit"
