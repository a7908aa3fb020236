"""A seeded, reproducible random workload: hypothesis strategies for instance plans.

A *plan* says what one top-level instance does and what happens to it from outside:

- ``cls``, ``key``, ``script``: its class (:mod:`model.flows`), correlation key and
  script — visits of hiccups ("raise", "rl") and an outcome each: Next (with or without a
  delay), Await any/all of shared names with or without ``limit`` and with no, a short
  (it may fire) or a long (it never fires) ``timeout``, with or without ``on_timeout``;
  Sleep; Spawn (each failure policy, children that spawn again); Done, Fail, Cancel;
  exhausted attempts with or without an ``on_error`` compensation;
- ``create``: ``insert`` (alone), ``batch`` (``insert_all`` with many others) or
  ``start`` (signal-with-start);
- ``deliveries``: batches of signals of shared names, by id or by correlation key, some
  with an idempotency key (a small pool, so that some repeat) or ``start=``, sent
  ``insert`` (in the creating transaction), ``asap``, when ``parked``, ``retrying`` (while
  a step that has a pack runs again), ``late`` (from a version on) or once ``finished``
  (left over);
- ``cancel`` (a version from which it is cancelled when seen parked, or with
  ``cancel_when`` "packed" when seen holding a pack: running, backing off or rate limited
  in the step after an await) and ``retry`` (once it failed or was cancelled).

Children carry the same fields in their script. Under ``fail_fast``/``cancel_rest`` a
spawn has exactly one failing child; its siblings *hold* (await "hold", released only
once their parent finished), so which children had finished at the join is not timing
(see :mod:`model.model`). Such parents are never retried, and their children never
cancelled from outside.

:func:`plans` draws them from a seed: each plan from its own hypothesis ``ConjectureData``
seeded by (seed, ordinal), so one instance's plan can be drawn again alone.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from hypothesis.control import BuildContext
from hypothesis.internal.conjecture.data import ConjectureData

from model.flows import STEPS, Flow, Kid, Sturdy, Task

NAMES = ("a", "b", "c", "d")
"""Signal names every instance shares (so a wake on another instance's signal shows)."""
SENT = (*NAMES, "x")
"""What deliveries send: "x" is never awaited (it stays pending, a leftover)."""
WHEN = ("insert", "asap", "parked", "parked", "retrying", "retrying", "late", "finished")
"""When a batch goes out (see :mod:`model.driver`)."""
SHORT = 0.3
LONG = 3600.0
POLICIES = ("wait", "fail_fast", "cancel_rest")
MAX_ATTEMPTS = {c.name: c.max_attempts for c in (Flow, Sturdy, Kid, Task)}

to_step = st.sampled_from(STEPS)


@st.composite
def awaits(draw: Any) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    timeout = draw(st.sampled_from((None, None, SHORT, LONG)))
    return {
        "kind": "await",
        "names": names,
        "all": len(names) > 1 and draw(st.booleans()),
        "limit": draw(st.sampled_from((None, None, 1, 2, 3))),
        "timeout": timeout,
        "on_timeout": draw(st.one_of(st.none(), to_step)) if timeout else None,
        "to": draw(to_step),
    }


@st.composite
def hiccups(draw: Any, cls: str) -> dict[str, Any]:
    """Hiccups before a visit's outcome: a few, or all of its attempts and more."""
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.integers(0, 2))
        raises = ["raise"] * (MAX_ATTEMPTS[cls] + extra)
        return {"hiccups": draw(st.sampled_from((["rl"], []))) + raises, "exhaust": True}
    return {"hiccups": draw(st.lists(st.sampled_from(("raise", "rl")), max_size=2))}


@st.composite
def compensation(draw: Any, fail: bool = False) -> dict[str, Any] | None:
    """What ``on_error`` returns (with ``fail``: nothing that could finish it done)."""
    kind = draw(st.sampled_from(("none", "next", "fail", "await", *(() if fail else ("done",)))))
    if kind == "none":
        return None
    if kind == "await":
        return draw(awaits())
    return {"kind": kind, "to": draw(to_step)}


@st.composite
def deliveries(draw: Any, keyed: bool) -> list[dict[str, Any]]:
    signal = st.fixed_dictionaries(
        {
            "name": st.sampled_from(SENT),
            "by": st.sampled_from(("id", "key") if keyed else ("id",)),
            "idem": st.sampled_from((None, None, "k1", "k2")),
            "start": st.booleans() if keyed else st.just(False),
        }
    )
    batch = st.fixed_dictionaries(
        {
            "when": st.sampled_from(WHEN),
            "after": st.integers(0, 4),
            "signals": st.lists(signal, min_size=1, max_size=4),
        }
    )
    return draw(st.lists(batch, max_size=4))


@st.composite
def scripts(draw: Any, cls: str, key: str, depth: int, fail: bool = False) -> dict[str, Any]:
    """A script for ``cls``; with ``fail`` it ends failed (a fail_fast spawn's failure)."""
    if cls == Task.name:
        visit = {**draw(hiccups(cls)), "do": {"kind": "fail" if fail else "done"}}
        if visit.get("exhaust"):
            visit["on_error"] = None if fail else draw(st.sampled_from(({"kind": "done"}, None)))
        return {"key": key, "visits": [visit]}
    count = draw(st.integers(1, 5))
    visits = []
    for v in range(count):
        last = v == count - 1
        visit = draw(hiccups(cls))
        options = ["done", "done", "fail", "cancel"] if last else ["next", "await", "await"]
        if not last:
            options += ["sleep"] + (["spawn"] if depth < 2 else [])
        kind = "fail" if fail and last else draw(st.sampled_from(options))
        if kind == "await":
            visit["do"] = draw(awaits())
        elif kind == "spawn":
            visit["do"] = draw(spawns(key, v, depth))
        else:
            visit["do"] = {"kind": kind, "to": draw(to_step)}
            if kind == "next" and draw(st.booleans()):
                visit["do"]["delay"] = 0.05
            if kind == "sleep":
                visit["do"]["seconds"] = draw(st.sampled_from((0.05, 0.2)))
        if visit.get("exhaust"):
            visit["on_error"] = None if fail and last else draw(compensation(fail))
        visits.append(visit)
    return {"key": key, "visits": visits, "deliveries": draw(deliveries(True))}


@st.composite
def spawns(draw: Any, key: str, version: int, depth: int) -> dict[str, Any]:
    policy = draw(st.sampled_from(POLICIES))
    count = draw(st.integers(1, 3))
    kids = []
    failing = draw(st.integers(0, count)) if policy != "wait" else -1
    for n in range(count + (policy != "wait")):
        child_key = f"{key}/{version}.{n}"
        cls = draw(st.sampled_from((Kid.name, Kid.name, Task.name)))
        if n == failing and draw(st.integers(0, 4)) == 0:
            kids.append({"cls": cls, "script": {"key": child_key, "dup": True, "visits": []}})
        elif n == failing:
            kids.append({"cls": cls, "script": draw(scripts(cls, child_key, depth + 1, True))})
        elif policy != "wait":  # a sibling that holds until its parent finished
            hold = {"hiccups": [], "do": {"kind": "await", "names": ["hold"], "all": False}}
            hold["do"].update({"limit": None, "timeout": None, "on_timeout": None, "to": "s1"})
            end = {"hiccups": [], "do": {"kind": "done"}}
            kids.append(
                {"cls": Kid.name, "script": {"key": child_key, "hold": True, "visits": [hold, end]}}
            )
        else:
            script = draw(scripts(cls, child_key, depth + 1))
            if cls != Task.name and draw(st.integers(0, 5)) == 0:
                script["cancel"] = draw(st.integers(0, 3))
            kids.append({"cls": cls, "script": script})
    return {"kind": "spawn", "policy": policy, "children": kids, "to": draw(to_step)}


def _fail_fast(script: dict[str, Any]) -> bool:
    return any(v["do"]["kind"] == "spawn" and v["do"]["policy"] != "wait" for v in script["visits"])


@st.composite
def instance_plans(draw: Any, ordinal: int, prefix: str = "m") -> dict[str, Any]:
    cls = draw(st.sampled_from((Flow.name, Sturdy.name)))
    key = f"{prefix}:{ordinal}"
    script = draw(scripts(cls, key, 0))
    create = draw(st.sampled_from(("batch", "batch", "insert", "start")))
    if create == "start":
        first = {"name": draw(st.sampled_from(NAMES)), "by": "key", "idem": "k1", "start": True}
        script["deliveries"].insert(0, {"when": "start", "after": 0, "signals": [first]})
    if draw(st.integers(0, 6)) == 0:
        script["cancel"] = draw(st.integers(0, 3))
    script["retry"] = not _fail_fast(script) and draw(st.booleans())
    if "cancel" in script:  # drawn last: the draws above stay those of earlier workloads
        script["cancel_when"] = draw(st.sampled_from(("parked", "parked", "packed")))
    return {"cls": cls, "key": key, "create": create, "script": script}


def draw_plan(seed: int, ordinal: int, prefix: str = "m") -> dict[str, Any]:
    """The plan of instance ``ordinal`` of the workload ``seed`` (reproducible)."""
    data = ConjectureData(random=random.Random(seed * 1_000_003 + ordinal))
    with BuildContext(data, is_final=True, wrapped_test=lambda: None):
        plan: dict[str, Any] = data.draw(instance_plans(ordinal, prefix))
    return plan


def plans(seed: int, count: int, prefix: str = "m") -> list[dict[str, Any]]:
    """``count`` instance plans of the workload ``seed``."""
    return [draw_plan(seed, n, prefix) for n in range(count)]
