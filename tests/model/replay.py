"""Replay a failing case against the model alone: ``python -m model.replay CASE.json``.

A case file is written for every instance the equivalence test found different
(:func:`model.compare.save`): the class, the initial state, the events the instance saw,
its children's outcomes and what the engine committed. This prints the model's trail and
the engine's side by side, so the model can be stepped through (or changed) without a
database or a Runner.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import attrs

from model import flows, model
from model.compare import side_by_side
from model.records import ChildOutcome, Event, Sig, lookup


def load(path: str) -> tuple[Any, Any, list[Event], dict[int, Any], dict[str, Any]]:
    with open(path) as f:
        data = json.load(f)
    events = [
        Event(e["kind"], e["h"], e["status"], tuple(Sig(**s) for s in e["signals"]))
        for e in data["events"]
    ]
    children = {
        int(v): [None if c is None else ChildOutcome(**c) for c in outs]
        for v, outs in data["children"].items()
    }
    cls = flows.CLASSES.get(data["cls"]) or lookup(data["cls"])
    return cls, data["state"], events, children, data["observed"]


def main(argv: list[str]) -> None:
    cls, state, events, children, observed = load(argv[0])
    trail = model.run(cls, state, events, lambda version, specs: children[version])
    ended = f"stopped: {trail.problem}" if trail.problem else "ran to the end"
    print(f"{cls.name}, {len(events)} events; the model {ended}")
    print("transitions (version, attempt, from, kind, to, status):")
    commits = [list(attrs.astuple(c)) for c in trail.commits]
    print("\n".join(side_by_side(commits, observed["commits"])))
    print("runs (version, attempt, step, pack, children):")
    runs = [[r.version, r.attempt, r.step, list(r.pack), r.children] for r in trail.runs]
    print("\n".join(side_by_side(json.loads(json.dumps(runs)), observed["runs"])))
    print(f"final: model {trail.status} {trail.result!r} {trail.error}; engine {observed['final']}")


if __name__ == "__main__":
    main(sys.argv[1:])
