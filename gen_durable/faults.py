"""Fault injection at named points of the runtime, for reliability tests.

Off (the default), a fault point costs one module-level ``None`` check at its call site::

    if faults.active is not None:
        faults.hit("after_claim")

Nothing is computed and nothing is allocated unless a test turned faults on, either in
its own process with :func:`inject`, or in a child process through the environment
variable ``GEN_DURABLE_FAULTS``, read once when this module is imported::

    GEN_DURABLE_FAULTS="after_claim:kill:0.1"          # SIGKILL self on 10 % of claims
    GEN_DURABLE_FAULTS="commit:raise=deadlock:n=3"      # the first 3 group commits fail
    GEN_DURABLE_FAULTS="in_step:stall:s=5:after=20"     # the 21st step sleeps 5 s

A rule is ``point:action[:option...]``; rules are separated by ``;``. Actions: ``kill``
(SIGKILL this process: no cleanup, no flush — a crash), ``raise`` (raise
:class:`InjectedFault`, or the error registered under ``raise=NAME`` with
:func:`register_error`), ``stall`` (sleep ``s=`` seconds). Options: a bare number or
``p=`` is the probability of firing on a hit (default 1), ``n=`` the most times the rule
fires, ``after=`` how many hits pass before it may fire, ``seed=`` seeds the draws.

This module imports the standard library only, so that every layer may call it.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

ENV = "GEN_DURABLE_FAULTS"
"""Fault rules for this process, read once at import (for reliability tests only)."""

POINTS: dict[str, str] = {
    "claim": "in the claim's transaction, after the rows were leased (for rows leased at "
    "once: committed, then given back if it raises)",
    "after_claim": "after the claim committed, before the steps are scheduled",
    "in_step": "on the worker thread, before the step's code runs",
    "before_commit": "after the step returned, before its transition is committed",
    "commit": "inside the transition's transaction, before COMMIT (grouped or ctx.session)",
    "spawn_commit": "inside a transition's transaction that inserted children, before COMMIT",
    "after_commit": "after the transition committed, before the step is reported",
    "heartbeat": "inside the heartbeat's transaction, after it extended held leases",
    "reaper": "inside the reaper's transaction, after it returned expired leases",
    "gc": "inside the garbage collector's transaction, after it deleted instances",
    "signal": "inside signal(), after the signal row was written, before the wake-up",
}
"""Every named fault point and where it sits."""

ACTIONS = ("kill", "raise", "stall")

ErrorFactory = Callable[[object], BaseException]
"""Builds the exception a ``raise`` rule throws; receives the call site's context (a
connection for points inside a transaction, else None)."""


class InjectedFault(RuntimeError):
    """The default exception of a ``raise`` rule."""


_errors: dict[str, ErrorFactory] = {}


def register_error(name: str, factory: ErrorFactory) -> None:
    """Make ``raise=name`` in a rule throw ``factory(context)``."""
    _errors[name] = factory


@dataclass
class Rule:
    """What to do when execution reaches ``point``."""

    point: str
    action: str
    probability: float = 1.0
    count: int | None = None
    """Fire at most this many times (None: unlimited)."""
    after: int = 0
    """Let this many hits pass before the rule may fire."""
    seconds: float = 1.0
    """How long a ``stall`` sleeps (unless ``until`` is given)."""
    until: threading.Event | None = None
    """A ``stall`` waits for this event instead (in-process tests)."""
    error: str | ErrorFactory | BaseException | None = None
    """What a ``raise`` throws: a registered name, a factory, an exception, or None."""
    hits: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"unknown fault point {self.point!r}; known: {sorted(POINTS)}")
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; known: {ACTIONS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"fault probability must be within [0, 1], got {self.probability}")


class Plan:
    """The active rules, with counts of hits and firings (thread-safe)."""

    def __init__(self, rules: list[Rule], seed: int | None = None) -> None:
        self.rules = rules
        self._by_point: dict[str, list[Rule]] = {}
        for rule in rules:
            self._by_point.setdefault(rule.point, []).append(rule)
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def fired(self, point: str | None = None) -> int:
        """How many times rules (of ``point``) fired."""
        with self._lock:
            return sum(r.fired for r in self.rules if point is None or r.point == point)

    def hits(self, point: str) -> int:
        """How many times execution reached ``point`` while this plan was active."""
        with self._lock:
            return max((r.hits for r in self._by_point.get(point, ())), default=0)

    def _choose(self, point: str) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self._by_point.get(point, ()):
                rule.hits += 1
                if chosen is not None or rule.hits <= rule.after:
                    continue
                if rule.count is not None and rule.fired >= rule.count:
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                chosen = rule
            return chosen


active: Plan | None = None
"""The plan in force, or None (faults off). Call sites test this before calling :func:`hit`."""


def hit(point: str, context: object = None) -> None:
    """Execution reached ``point``: crash, raise or stall if a rule says so."""
    plan = active
    if plan is None:
        return
    rule = plan._choose(point)
    if rule is None:
        return
    if rule.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # the signal is delivered asynchronously; never return
    elif rule.action == "stall":
        if rule.until is not None:
            rule.until.wait()
        else:
            time.sleep(rule.seconds)
    else:
        raise _error(rule, context)


def _error(rule: Rule, context: object) -> BaseException:
    error = rule.error
    if isinstance(error, BaseException):
        return error
    if isinstance(error, str):
        factory = _errors.get(error)
        if factory is None:
            return InjectedFault(f"injected fault {error!r} at {rule.point}")
        return factory(context)
    if error is not None:
        return error(context)
    return InjectedFault(f"injected fault at {rule.point}")


def parse(spec: str) -> tuple[list[Rule], int | None]:
    """Rules (and the seed) from a ``GEN_DURABLE_FAULTS`` string."""
    rules: list[Rule] = []
    seed: int | None = None
    for text in spec.replace(",", ";").split(";"):
        text = text.strip()
        if not text:
            continue
        parts = text.split(":")
        if len(parts) < 2:
            raise ValueError(f"a fault rule is point:action[:option...], got {text!r}")
        point, action = parts[0], parts[1]
        error: str | None = None
        if action.startswith("raise="):
            action, error = "raise", action.split("=", 1)[1]
        options: dict[str, str] = {}
        for option in parts[2:]:
            key, sep, value = option.partition("=")
            if not sep:
                key, value = "p", key
            options[key] = value
        unknown = set(options) - {"p", "n", "after", "s", "seed"}
        if unknown:
            raise ValueError(f"unknown fault options {sorted(unknown)} in {text!r}")
        if "seed" in options:
            seed = int(options["seed"])
        rules.append(
            Rule(
                point=point,
                action=action,
                probability=float(options.get("p", 1.0)),
                count=int(options["n"]) if "n" in options else None,
                after=int(options.get("after", 0)),
                seconds=float(options.get("s", 1.0)),
                error=error,
            )
        )
    return rules, seed


def _from_env() -> Plan | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    rules, seed = parse(spec)
    return Plan(rules, seed) if rules else None


@contextlib.contextmanager
def inject(*rules: Rule | str, seed: int | None = None) -> Iterator[Plan]:
    """Turn faults on in this process for the duration of the block::

        with faults.inject(Rule("commit", "raise", count=2, error=deadlock)) as plan:
            ...
        assert plan.fired("commit") == 2

    Strings are parsed like ``GEN_DURABLE_FAULTS``. Blocks do not nest.
    """
    global active
    parsed: list[Rule] = []
    for rule in rules:
        if isinstance(rule, str):
            more, more_seed = parse(rule)
            parsed.extend(more)
            seed = more_seed if seed is None else seed
        else:
            parsed.append(rule)
    if active is not None:
        raise RuntimeError("fault injection is already active in this process")
    plan = Plan(parsed, seed)
    active = plan
    try:
        yield plan
    finally:
        active = None


active = _from_env()
