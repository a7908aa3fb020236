"""Run one claimed step and apply its decision in one fenced transaction.

No transaction is open while step code runs, unless the step opens ``ctx.session``; its
transaction then ends with the fenced commit of the transition, so the step's writes and
its transition land together or not at all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future

import attrs
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from gen_durable import events, faults, store, tracing
from gen_durable.clock import monotonic
from gen_durable.domain import definitions as registry
from gen_durable.domain import serialization, versioning
from gen_durable.domain.context import Context
from gen_durable.domain.decide import (
    Failure,
    StepSnapshot,
    Transition,
    decide,
    outcome_state,
)
from gen_durable.domain.options import HistoryMode
from gen_durable.domain.outcomes import OUTCOME_TYPES, Outcome, RateLimited
from gen_durable.domain.retry import backoff_delay
from gen_durable.errors import InvalidOutcome, RateLimitedError, shown
from gen_durable.runtime import step_session, steps
from gen_durable.runtime.committer import Committer
from gen_durable.runtime.inflight import Inflight, Lease
from gen_durable.runtime.steps import Claimed, StepReport
from gen_durable.store.transitions import Committed

log = logging.getLogger("gen_durable.runtime")


Observer = Callable[[StepReport], None]
Done = Callable[[StepReport | None, BaseException | None], None]
"""Told once how a step ended: its report once its transition's commit ended, or the
error that lost it (its lease will expire)."""
Redo = Callable[[Exception], Transition]
"""Turns a refusal of the step's own transaction into a retry's transition."""


class Executor:
    """Runs steps on worker threads and commits their transitions."""

    def __init__(
        self,
        engine: Engine,
        committer: Committer,
        inflight: Inflight,
        *,
        on_committed: Callable[[list[Committed]], None],
        observer: Observer | None = None,
        max_children: int | None = None,
        history: HistoryMode = "none",
    ) -> None:
        self._engine = engine
        self._open_session = functools.partial(step_session.open_session, engine)
        self._history = history
        self._max_children = max_children
        self._committer = committer
        self._inflight = inflight
        self._on_committed = on_committed
        self._observer = observer

    def lease_for(self, claimed: Claimed) -> Lease:
        """Register the lease of a claimed row before its step is scheduled."""
        lease = Lease(
            instance_id=claimed.id, token=claimed.lease_token, queue=claimed.queue, deadline=None
        )
        self._inflight.add(lease)
        return lease

    def forget(self, lease: Lease) -> None:
        """Unregister a lease given back before its step started."""
        self._inflight.remove(lease.instance_id)

    def run(self, claimed: Claimed, lease: Lease) -> StepReport:
        """Run the step, decide, commit, and wait for the commit. Never raises for a
        step's own errors (inline use: :func:`gen_durable.testing.drain`)."""
        out: Future[StepReport] = Future()

        def done(report: StepReport | None, error: BaseException | None) -> None:
            if report is None:
                out.set_exception(error or RuntimeError("a step ended with no report"))
            else:
                out.set_result(report)

        self.execute(claimed, lease, done)
        return out.result()

    def execute(self, claimed: Claimed, lease: Lease, done: Done) -> None:
        """Run the step on this thread and hand its transition to the committer.

        Returns at once when the step did not use ``ctx.session``: ``done`` is called
        once the transition committed (or was fenced out), on the committer's thread, so
        this thread is free for the next step meanwhile. The instance's own next step
        cannot start before that: its row stays ``running`` until the commit. The lease
        stays registered (and extended by the heartbeat) until then. ``done`` is called
        exactly once, with the report or with the error that lost it.
        """
        started = monotonic()
        try:
            cls = registry.lookup(claimed.fsm)
            assert cls is not None, "the dispatcher claims only known classes"
            if claimed.state_version != cls.state_version or claimed.step in cls.step_aliases:
                try:
                    claimed = steps.loadable(cls, claimed)
                except versioning.StateUpgradeFailed as failed:
                    self._park(claimed, failed, started, done)
                    return
            transition, ctx, redo = self._step(cls, claimed, lease, started)
            if claimed.state_version != cls.state_version:
                # Upgraded on load: a state the step stores is in the code's version.
                transition = attrs.evolve(transition, state_version=cls.state_version)
            if ctx is not None:
                try:
                    committed = step_session.commit(ctx, transition, self._on_committed)
                except DBAPIError as refused:
                    # The database refused the step's own transaction (a serialization
                    # failure, a deadlock, a lost connection): its writes rolled back.
                    # Commit a retry like a step that raised, rather than let the lease
                    # lapse.
                    transition = redo(refused)
                    committed = self._committer.submit(transition).result()
                report = self._report(claimed, transition, committed, started)
            else:
                waiter = _Waiter(self, claimed, transition, started, done)
                self._committer.submit_to(transition, waiter)
                return
        except BaseException as exc:
            self._inflight.remove(claimed.id)
            _finish(done, None, exc)
            return
        _finish(done, report, None)

    def _step(
        self, cls: type[registry.Definition], claimed: Claimed, lease: Lease, started: float
    ) -> tuple[Transition, Context | None, Redo]:
        """Run the step's code and decide; the context is returned when the transition
        must commit in the step's own session."""
        if events.active("step.start"):
            events.emit(
                "step.start", **steps.event_fields(claimed), trace_context=claimed.trace_context
            )
        if cls.timeout is not None:
            lease.deadline = started + cls.timeout
        snap = StepSnapshot(
            instance_id=claimed.id,
            fsm=claimed.fsm,
            step=claimed.step,
            steps=cls._gd_steps,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            max_children=self._max_children,
            lease_token=claimed.lease_token,
            version=claimed.version,
            awaited=tuple(s.id for s in claimed.awaited),
            history=cls.history or self._history,
        )
        ctx = Context(
            instance_id=claimed.id,
            fsm=claimed.fsm,
            step=claimed.step,
            state=None,
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            version=claimed.version,
            awaited=claimed.awaited,
            children=claimed.children,
            correlation_key=claimed.correlation_key,
            parent_id=claimed.parent_id,
            deadline=lease.deadline,
            cancel_event=lease.cancel,
            session_factory=self._open_session,
        )
        instance: registry.Definition | None = None
        what = "args" if cls._gd_kind == "job" else "state"

        def failed(exc: Exception) -> Transition:
            return self._failure(cls, instance, snap, ctx, claimed, exc, started)

        try:
            ctx.state = serialization.structure(
                claimed.stored_state(), cls._gd_state_type, what, owned=True
            )
            instance = cls()
            if faults.active is not None:
                faults.hit("in_step")
            tracer = tracing.tracer
            if tracer is None:
                returned = instance.step(claimed.step, ctx)
            else:
                with tracer.step_scope(claimed.id):
                    returned = instance.step(claimed.step, ctx)
            outcome = steps.as_outcome(cls, returned)
            if isinstance(outcome, RateLimited):
                # The step re-runs from the state it was claimed with, as after a failure:
                # its in-place changes are not stored.
                text, router = None, steps.router(cls, claimed, claimed.stored_state)
            else:
                # Checked now: a bad value fails the attempt that made it, not the next load.
                new = serialization.encode_state(
                    outcome_state(outcome, ctx.state), cls._gd_state_type, what
                )
                text, router = new.text, steps.router(cls, claimed, lambda: new.data)
            transition = decide(snap, outcome, text, route=router, seconds=_since(started))
            use_session = ctx.session_if_open is not None
        except RateLimitedError as refused:
            step_session.discard(ctx)
            try:
                limited = RateLimited(max(0.0, refused.retry_after))
                router = steps.router(cls, claimed, claimed.stored_state)
                transition = decide(snap, limited, None, route=router, seconds=_since(started))
            except Exception as bad:  # a retry_after no outcome may carry: a failed attempt
                transition = failed(bad)
            use_session = False
        except Exception as exc:
            step_session.discard(ctx)
            transition = failed(exc)
            use_session = False
        if faults.active is not None:
            faults.hit("before_commit")
        return transition, ctx if use_session else None, failed

    def _park(
        self,
        claimed: Claimed,
        failed: versioning.StateUpgradeFailed,
        started: float,
        done: Done,
    ) -> None:
        """A failing upgrade: the row keeps its JSON and version, unfinished and out of
        every claim (scheduled, with no time), with the error stored, until an operator
        upgrades it with fixed code (``gen-durable upgrade-state``) or moves it."""
        error = versioning.error_json(failed, claimed.step)
        log.warning("instance %s of %s parked: %s", claimed.id, claimed.fsm, failed)
        try:
            with self._engine.begin() as conn:
                landed = store.upgrades.park(conn, claimed.id, claimed.lease_token, error, None)
            report = self._report(claimed, steps.parked(claimed, error), landed, started)
        except BaseException as exc:
            self._inflight.remove(claimed.id)
            _finish(done, None, exc)
            return
        _finish(done, report, None)

    def _report(
        self, claimed: Claimed, decision: Transition, committed: bool, started: float
    ) -> StepReport:
        """After the commit: the step's report, to the observer and telemetry."""
        try:
            if faults.active is not None and committed:
                faults.hit("after_commit")
            report = StepReport(
                instance_id=claimed.id,
                fsm=claimed.fsm,
                step=claimed.step,
                attempt=claimed.attempt,
                decision=decision,
                committed=committed,
                duration=monotonic() - started,
            )
            if not committed:
                log.info("step %s.%s of %s was fenced out", claimed.fsm, claimed.step, claimed.id)
            if self._observer is not None:
                self._observer(report)
            steps.emit_stop(claimed, report)
            return report
        finally:
            self._inflight.remove(claimed.id)

    def _failure(
        self,
        cls: type[registry.Definition],
        instance: registry.Definition | None,
        snap: StepSnapshot,
        ctx: Context,
        claimed: Claimed,
        exc: Exception,
        started: float,
    ) -> Transition:
        error = steps.error_json(exc, claimed)
        events.emit("step.exception", **steps.event_fields(claimed), exception=exc)
        log.info(
            "step %s.%s of %s failed (attempt %s of %s): %r",
            claimed.fsm,
            claimed.step,
            claimed.id,
            claimed.attempt,
            claimed.max_attempts,
            exc,
        )
        compensation: Outcome | None = None
        if claimed.attempt >= claimed.max_attempts and instance is not None:
            what = "args" if cls._gd_kind == "job" else "state"
            try:
                ctx.state = serialization.structure(
                    claimed.stored_state(), cls._gd_state_type, what, owned=True
                )
                compensation = instance.on_error(claimed.step, exc, ctx)
                if compensation is not None and not isinstance(compensation, OUTCOME_TYPES):
                    raise InvalidOutcome(f"on_error returned {shown(compensation)}")
                if compensation is not None:
                    compensation = steps.as_outcome(cls, compensation)
                    new = serialization.encode_state(
                        outcome_state(compensation, ctx.state), cls._gd_state_type, what
                    )
                    return decide(
                        snap,
                        Failure(error, 0.0, compensation),
                        new.text,
                        route=steps.router(cls, claimed, lambda: new.data, safe=True),
                        seconds=_since(started),
                    )
            except Exception as hook_exc:
                log.warning("on_error of %s raised %r; failing", claimed.fsm, hook_exc)
                error = {**error, "on_error": steps.error_json(hook_exc, claimed)}
            finally:
                step_session.discard(ctx)
        try:
            delay = backoff_delay(cls.backoff, claimed.attempt)
        except Exception:
            delay = 1.0
        # The stored state stays (None): a failed attempt's in-place changes are dropped.
        return decide(
            snap,
            Failure(error, delay, None),
            None,
            route=steps.router(cls, claimed, claimed.stored_state, safe=True),
            seconds=_since(started),
        )


class _Waiter:
    """What the committer tells once a step's transition's commit ended (one small object
    per step, called on the committer's thread: no future, no lock of its own)."""

    __slots__ = ("_claimed", "_done", "_executor", "_started", "_transition")

    def __init__(
        self,
        executor: Executor,
        claimed: Claimed,
        transition: Transition,
        started: float,
        done: Done,
    ) -> None:
        self._executor = executor
        self._claimed = claimed
        self._transition = transition
        self._started = started
        self._done = done

    def __call__(self, result: bool | BaseException) -> None:
        executor, claimed = self._executor, self._claimed
        if isinstance(result, BaseException):
            executor._inflight.remove(claimed.id)
            _finish(self._done, None, result)
            return
        try:
            report = executor._report(claimed, self._transition, result, self._started)
        except BaseException as exc:
            _finish(self._done, None, exc)
            return
        _finish(self._done, report, None)


def _finish(done: Done, report: StepReport | None, error: BaseException | None) -> None:
    """Tell ``done`` once; what it raises is logged, never taken for the step's own error
    (it would be told twice)."""
    try:
        done(report, error)
    except Exception:
        log.exception("a step's done callback failed")


def _since(started: float) -> float:
    return monotonic() - started
