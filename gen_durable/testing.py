"""Helpers for testing your own FSMs and jobs against a real database.

- :func:`drain` runs every runnable step inline, in the calling thread, until nothing is
  runnable, with the runtime's own claim, executor and commit — the same semantics as a
  :class:`~gen_durable.Runner`, minus the threads.
- :func:`advance` lets durable time pass: delays, Sleeps, backoffs and await timeouts
  fall due ``seconds`` sooner.
- :func:`assert_inserted` and :func:`assert_signalled` check what your code wrote, with
  failure messages that show what is there instead.

A pytest plugin (:mod:`gen_durable.pytest_plugin`, registered automatically) wraps them
in fixtures. See the "Testing" guide.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from gen_durable import client as api
from gen_durable import store
from gen_durable.domain import definitions as registry
from gen_durable.domain import serialization
from gen_durable.domain.decide import Transition
from gen_durable.errors import NotFound, ValidationError
from gen_durable.runner import DEFAULT_MAX_CHILDREN
from gen_durable.runtime import claiming
from gen_durable.runtime.committer import Committer, Waiter
from gen_durable.runtime.executor import Executor
from gen_durable.runtime.inflight import Inflight
from gen_durable.runtime.maintenance.scheduler import Scheduler
from gen_durable.runtime.steps import StepReport
from gen_durable.store import testing as testing_sql
from gen_durable.store.transitions import Committed
from gen_durable.types import InstanceSnapshot, SignalInfo

__all__ = [
    "StepLimitExceeded",
    "advance",
    "assert_inserted",
    "assert_signalled",
    "drain",
    "reset",
]

Bind = Engine | Connection | Session

LEASE_SECONDS = 3600.0
"""The lease :func:`drain` claims with: a step run inline is never reaped meanwhile."""
BATCH = 100
"""How many instances of one queue :func:`drain` claims at a time."""
MATCH_FIELDS = (
    "state",
    "args",
    "status",
    "step",
    "queue",
    "priority",
    "correlation_key",
    "concurrency_key",
    "max_attempts",
    "parent_id",
)
"""What :func:`assert_inserted` can match on."""
SHOWN = 20
"""How many candidates a failure message lists."""


class StepLimitExceeded(AssertionError):
    """:func:`drain` ran ``max_steps`` steps and work was still runnable."""


class _InlineCommitter(Committer):
    """Writes each transition at once, in the calling thread (no committer thread)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, _ignore)
        self._inline_engine = engine

    def submit_to(self, transition: Transition, waiter: Waiter) -> None:
        try:
            with self._inline_engine.begin() as conn:
                landed = store.transitions.commit(conn, [transition], None)
        except BaseException as exc:
            waiter(exc)
        else:
            waiter(transition.instance_id in landed)


def _ignore(committed: list[Committed]) -> None:
    """Nothing to wake: :func:`drain` looks for runnable work itself."""


def _wake_nothing(queues: Iterable[str]) -> None:
    """Nothing to wake: :func:`drain` looks for runnable work itself."""


def drain(
    engine: Engine,
    *,
    queues: Iterable[str] | None = None,
    fsms: Iterable[type[registry.Definition] | str] | None = None,
    max_steps: int = 10_000,
) -> list[StepReport]:
    """Run every runnable step, repeatedly, until nothing is runnable; return the reports.

    Each round makes due timers runnable (as a Runner's scheduler does, an await that
    timed out recorded in the history of a class that keeps it), claims what is runnable
    (in priority, then FIFO order) and runs each claimed step through the runtime's
    executor, committing its transition before the next step runs. Steps that a round
    makes runnable — the next step of an FSM, children of a Spawn, a parent whose join is
    met, an await whose signal is pending — run in a later round. What is not due yet (a
    delay, a Sleep, a retry's backoff, an await's timeout) is left alone: call
    :func:`advance` to let time pass, then drain again.

    ``queues`` and ``fsms`` (classes or registry names) restrict what runs; by default
    every queue and every registered class. Raises :class:`StepLimitExceeded` after
    ``max_steps`` steps with work still runnable (an FSM that never stops, say).

    Rows must be committed to be seen: insert in a transaction of your own (or through
    ``engine``) before draining. Do not run a :class:`~gen_durable.Runner` on the same
    database at the same time.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValidationError(f"max_steps must be an int >= 1, got {max_steps!r}")
    names = (
        sorted(registry.registered())
        if fsms is None
        else sorted({registry.resolve(f).name for f in fsms})
    )
    wanted = None if queues is None else set(_names(queues, "queues"))
    executor = Executor(
        engine,
        _InlineCommitter(engine),
        Inflight(),
        on_committed=_ignore,
        max_children=DEFAULT_MAX_CHILDREN,
    )
    owner = f"gen_durable.testing:{os.getpid()}"
    # A Runner's scheduler, run by hand: a timeout gets its history row as under a Runner
    # (by the class's history option; drain's own default, like its steps', is "none").
    timers = Scheduler(engine, _wake_nothing, interval=1.0)
    reports: list[StepReport] = []
    while names:
        while timers.run_once():  # a full batch: more may be due
            pass
        with engine.begin() as conn:
            runnable = [
                q for q in testing_sql.runnable_queues(conn, names) if wanted is None or q in wanted
            ]
        if not runnable:
            break
        if len(reports) >= max_steps:
            raise StepLimitExceeded(_over_limit(max_steps, reports))
        ran = 0
        for queue in runnable:
            while len(reports) < max_steps:
                limit = min(BATCH, max_steps - len(reports))
                batch = claiming.claim(engine, queue, names, limit, owner, LEASE_SECONDS)
                for claimed in batch:
                    reports.append(executor.run(claimed, executor.lease_for(claimed)))
                ran += len(batch)
                if len(batch) < limit:
                    break
        if not ran:  # runnable, yet nothing could be claimed (held back by a limit)
            break
    return reports


def reset(engine: Engine) -> None:
    """Delete every instance, signal, runner record and cron tick: a clean slate per test.

    :func:`drain` runs whatever is runnable in the database, so give each test a clean
    one — a fresh database, or this (call it from a fixture before each test).
    """
    with engine.begin() as conn:
        testing_sql.delete_everything(conn)


def _names(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise ValidationError(f"{what} is a collection of names, not one string: {values!r}")
    return list(values)


def _over_limit(max_steps: int, reports: list[StepReport]) -> str:
    last = ", ".join(f"{r.fsm}.{r.step}#{r.instance_id}" for r in reports[-5:])
    return (
        f"drain ran max_steps={max_steps} steps and work is still runnable; an FSM may "
        f"loop forever (last steps: {last}). Pass a larger max_steps if it is expected."
    )


def advance(bind: Bind, seconds: float) -> int:
    """Let ``seconds`` of durable time pass for everything waiting on a timer.

    Every scheduled or awaiting instance's due time (a delay or ``run_at``, a Sleep, a
    retry's backoff, an await's timeout) moves ``seconds`` earlier, so what would have
    fallen due by then is due now; :func:`drain` (or a Runner's scheduler) then runs it.
    Returns how many instances were moved. With an ``Engine`` it commits on its own; with
    a ``Session`` or ``Connection`` it runs in the caller's transaction.

    Only instances waiting now are affected; cron schedules and rate limits keep the
    database's clock.
    """
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds < 10**9
    ):
        raise ValidationError(f"seconds must be a number >= 0, got {seconds!r}")
    with _connection(bind, write=True) as conn:
        return testing_sql.shift_timers(conn, timedelta(seconds=seconds))


@contextlib.contextmanager
def _connection(bind: Bind, *, write: bool = False) -> Iterator[Connection]:
    if isinstance(bind, Engine):
        if write:
            with bind.begin() as conn:
                yield conn
        else:
            with bind.connect() as conn:
                yield conn
    elif isinstance(bind, Session):
        yield bind.connection()
    elif isinstance(bind, Connection):
        yield bind
    else:
        raise ValidationError(
            f"expected a SQLAlchemy Engine, Session or Connection, got {type(bind).__name__}"
        )


def _matches(expected: Any, actual: Any) -> bool:
    """Equality, except that a dict matches a dict that has at least its keys (recursively)."""
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return all(k in actual and _matches(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def assert_inserted(
    bind: Bind, cls: type[registry.Definition] | str, **match: Any
) -> InstanceSnapshot:
    """Assert that an instance of ``cls`` exists whose fields match; return the first match.

    ``match`` names fields of :data:`MATCH_FIELDS`: ``state`` (or ``args`` for a job) —
    an attrs instance, or JSON, where a dict matches any state that has at least its keys
    with equal values — and ``status``, ``step``, ``queue``, ``priority``,
    ``correlation_key``, ``concurrency_key``, ``max_attempts``, ``parent_id`` by equality.
    On failure the message lists the instances of ``cls`` that do exist and how each one
    differs.
    """
    name = registry.resolve(cls).name
    unknown = sorted(set(match) - set(MATCH_FIELDS))
    if unknown:
        raise TypeError(f"assert_inserted cannot match on {unknown}; it knows {MATCH_FIELDS}")
    if "state" in match and "args" in match:
        raise TypeError("pass state= or args=, not both (they are the same column)")
    wanted = {("state" if k == "args" else k): v for k, v in match.items()}
    if "state" in wanted:
        wanted["state"] = serialization.unstructure(wanted["state"], "state")
    with _connection(bind) as conn:
        rows = testing_sql.instances_of(conn, name, 10_000)
        for row in rows:
            if not _differs(row, wanted):
                return api.get(conn, row.id)
        per_class = testing_sql.count_per_class(conn) if not rows else {}
    shown = ", ".join(f"{k}={v!r}" for k, v in wanted.items()) or "(anything)"
    if not rows:
        others = ", ".join(f"{fsm} x{n}" for fsm, n in per_class.items()) or "none at all"
        raise AssertionError(
            f"no {name} instance was inserted (wanted {shown}); instances present: {others}"
        )
    lines = [f"no {name} instance matches {shown}; {len(rows)} {name} instance(s) exist:"]
    for row in rows[:SHOWN]:
        diff = _differs(row, wanted)
        got = ", ".join(f"{k}={getattr(row, k)!r}" for k in diff)
        lines.append(f"  #{row.id} ({row.status} at {row.step!r}) differs: {got}")
    if len(rows) > SHOWN:
        lines.append(f"  ... and {len(rows) - SHOWN} more")
    raise AssertionError("\n".join(lines))


def _differs(row: testing_sql.Inserted, wanted: Mapping[str, Any]) -> list[str]:
    return [k for k, v in wanted.items() if not _matches(v, getattr(row, k))]


_ANY: Any = object()


def assert_signalled(bind: Bind, target: int | str, name: str, payload: Any = _ANY) -> SignalInfo:
    """Assert that the instance ``target`` (id or correlation key) received signal ``name``.

    With ``payload``, one such signal must carry it (a dict matches a payload that has
    at least its keys with equal values). Pending and consumed signals both count.
    Returns the first matching signal; on failure the message lists the signals the
    instance did receive.
    """
    expected = _ANY if payload is _ANY else serialization.unstructure(payload, "signal payload")
    with _connection(bind) as conn:
        try:
            snap = api.get(conn, target)
        except NotFound as exc:
            raise AssertionError(f"cannot check signal {name!r}: {exc}") from None
    for signal in snap.signals:
        if signal.name == name and (expected is _ANY or _matches(expected, signal.payload)):
            return signal
    what = f"signal {name!r}" + ("" if expected is _ANY else f" with payload {expected!r}")
    label = f"instance {snap.id}" + (
        f" (key {snap.correlation_key!r})" if snap.correlation_key else ""
    )
    if not snap.signals:
        raise AssertionError(f"{label} received no {what}; it received no signal at all")
    lines = [f"{label} received no {what}; its signals:"]
    for s in snap.signals[:SHOWN]:
        state = "consumed" if s.consumed_at is not None else "pending"
        lines.append(f"  #{s.id} {s.name!r} ({state}) payload={s.payload!r}")
    raise AssertionError("\n".join(lines))
