"""The outcome contract as a pure interpreter of one instance: its events in, its trail out.

``run(cls, state, events, children)`` calls the class's own ``step`` and ``on_error`` (the
code the engine runs) with a :class:`Ctx` and applies DESIGN.md §2 and §5 and the docs
(outcomes, signals, children, rate limiting):

- **Pending signals.** A signal is pending from its send until a commit consumes it; a
  repeated idempotency key of one instance is stored once (a duplicate of the first).
- **Await.** Any-of resumes when one awaited name is pending, all-of when every name is.
  The parking commit checks what is pending (after consuming its own pack), so a signal
  sent before the Await is delivered and the instance does not even park; a send to a
  parked instance wakes it. A fired timer resumes at ``on_timeout`` (or ``then``) with an
  empty pack.
- **Packs.** The first claim of the resumed step builds its pack: the pending signals of
  the awaited names in id order, at most ``limit``; the rest stay pending. Every later run
  of that step (after an exception, a RateLimited, a crash, a retry from outside of a step
  that failed) gets the same pack, whatever arrived meanwhile. A commit that moves on
  (Next, Await, Sleep, Spawn, Done, Fail, Cancel, on_error's outcome) consumes it:
  ``consumed_version`` = the version it commits. Retries, RateLimited and the final
  failure consume nothing.
- **Attempts.** Counted at claim, reset by a commit that moves on. An exception retries
  the step (kind ``retry``) while ``attempt < max_attempts``; then ``on_error``'s outcome is
  committed as if returned (its kind; the exception stays the stored error, even for a
  ``Fail``/``Cancel``, as docs/outcomes.md says), or the instance fails (kind
  ``error``, same version). ``RateLimited`` (returned or raised) commits ``rate_limited``
  and gives the attempt back; the state stays as claimed (in-place changes by the step
  are not stored, as after an exception). A crash (a lost lease) uses the attempt and commits
  nothing; on the last attempt the instance fails with ``LeaseExpired``, no ``on_error``.
- **Children.** Spawn parks the instance until its ``on_failure`` condition holds; then it
  resumes once at ``then`` and this and every later step see ``ctx.children`` (spawn
  order). ``children(version, specs)`` gives each child's final outcome (None: it never
  finished). "wait" needs every child finished. "fail_fast"/"cancel_rest" resume at the
  first failure: which siblings had finished by then is timing, so the model accepts only
  workloads where the failure is unique and every other child *holds* (parks until its
  parent has finished): they show as "unfinished", or "cancelled" under "cancel_rest";
  anything else raises :class:`Unpredictable`. That is the one constraint the workload
  must obey; every other result is computed exactly.
- **From outside.** ``cancel`` finishes the instance (a running step's commit is fenced
  out); ``cascade`` is the same cancel made by an ancestor's or by ``cancel_rest``;
  ``retry`` of a failed or cancelled one re-runs the step it ended at with attempts
  reset. A cancel keeps what the instance awaited: retried, one cancelled while parked on
  an ``Await`` is parked again (woken at once if its signals are pending, those sent while
  it was cancelled included); one whose step had its pack gets that pack again.

- **History without a step.** A fired timer commits ``timeout`` (from the step that
  awaited to the one it resumes at), a lost lease on the last attempt ``lease_expired``
  and a cancel from outside ``outside_cancel`` (not a cascade), each at the instance's
  version and attempt then, so that the history holds every transition; none counts
  toward ``ctx.prior``.

Events are what was observed under the instance's row lock: ``h``, the transitions
committed so far, and the status then. Before applying one, the model runs until it has
committed ``h`` transitions (claiming if the engine was running); if it cannot, or its
status disagrees with the observed one (an instance woken without its signals), the
trail records the problem and stops there.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import attrs

from gen_durable.domain.outcomes import (
    KEEP,
    OUTCOME_TYPES,
    Await,
    Cancel,
    Done,
    Fail,
    Next,
    RateLimited,
    Sleep,
    Spawn,
)
from gen_durable.domain.retry import backoff_delay
from gen_durable.errors import InvalidOutcome, RateLimitedError
from model.records import (
    Child,
    ChildOutcome,
    Children,
    Commit,
    Ctx,
    Diverged,
    Event,
    Run,
    Sig,
    Trail,
    Unpredictable,
)

READY = ("available", "scheduled")
FINISHED = ("done", "failed", "cancelled")
RUNAWAY = 10_000


def run(
    cls: type[Any], state: Any, events: Sequence[Event], children: Children | None = None
) -> Trail:
    """The trail of one instance of ``cls`` created with ``state`` that saw ``events``."""
    m = _Machine(cls, state, children or (lambda version, specs: [None] * len(specs)))
    try:
        for event in events:
            m.reach(event)
            getattr(m, "on_" + event.kind)(event)
        while m.advance():
            pass
    except Diverged as exc:
        m.t.problem = str(exc)
    return m.t


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


class _Machine:
    def __init__(self, cls: type[Any], state: Any, children: Children) -> None:
        self.cls, self.obj, self.children_of = cls, cls(), children
        self.t = Trail(step=cls._gd_initial, state=_json(state))
        self.attempt = self.h = self.prior = 0
        self.parked: Await | Spawn | None = None
        self.names: Await | None = None  # the Await the current step resumes from
        self.awaiter = ""  # the step that committed the last Await
        self.pack: tuple[Sig, ...] | None = None
        self.pending: list[Sig] = []
        self.keys: dict[str, int] = {}
        self.kids: tuple[Child, ...] = ()

    # -- reaching an event's anchor -----------------------------------------------------
    def reach(self, e: Event) -> None:
        while self.h < e.h or (e.status == "running" and self.t.status != "running"):
            if self.h == e.h and self.t.status in READY:
                self.claim()
            elif not self.advance():
                raise Diverged(f"{e} observed, but the model stays {self.t.status} at h={self.h}")
        if self.h > e.h:
            raise Diverged(f"{e} observed, but the model had committed {self.h} transitions")
        if self.t.status == "awaiting" and isinstance(self.parked, Spawn) and e.status in READY:
            self.join()
        seen = READY if self.t.status in READY else (self.t.status,)
        if e.status not in seen:
            raise Diverged(f"{e} observed while the model is {self.t.status} at h={self.h}")

    def advance(self) -> bool:
        if self.t.status in READY:
            self.claim()
        elif self.t.status == "running":
            self.execute()
        elif self.t.status == "awaiting" and isinstance(self.parked, Spawn):
            return self.join()
        else:
            return False
        return True

    # -- events --------------------------------------------------------------------------
    def on_send(self, e: Event) -> None:
        for sig in e.signals:
            first = self.keys.get(sig.key) if sig.key is not None else None
            self.t.sends.append((sig.id, first is not None))
            if first is None:
                self.pending.append(sig)
                self.t.stored[sig.id] = sig.name
                if sig.key is not None:
                    self.keys[sig.key] = sig.id
                if self.t.status == "awaiting" and self._satisfied():
                    self.t.status = "available"

    def on_crash(self, e: Event) -> None:
        self.t.runs[-1] = attrs.evolve(self.t.runs[-1], end="crash")
        if self.attempt >= self.t_max:
            self.commit("lease_expired", None, "failed")
            self.t.error = "LeaseExpired"
        else:
            self.t.status = "available"

    def on_timeout(self, e: Event) -> None:
        wait = self.parked
        if not isinstance(wait, Await) or wait.timeout is None or self._satisfied():
            raise Diverged(f"a timeout fired at h={self.h}, parked on {wait}")
        self.t.step = wait.on_timeout or wait.then
        self.commit_from(self.awaiter, "timeout", self.t.step, "available")
        self.parked, self.names, self.pack = None, None, None

    def on_cancel(self, e: Event) -> None:
        self.on_cascade(e)
        self.commit("outside_cancel", None, "cancelled")

    def on_cascade(self, e: Event) -> None:
        if self.t.status == "running":
            self.t.runs[-1] = attrs.evolve(self.t.runs[-1], end="abort")
        if isinstance(self.parked, Spawn):  # its unfinished descendants are cancelled with it
            self.kids = tuple(self._child(o) for o in self._outcomes(self.parked))
            self.parked = None
        self.t.status, self.t.error = "cancelled", "Cancel"

    def on_retry(self, e: Event) -> None:
        if self.t.status not in ("failed", "cancelled"):
            raise Diverged(f"retried while {self.t.status}")
        parked = self.t.status == "cancelled" and isinstance(self.parked, Await)
        resumed = parked and self.pack is None and not self._satisfied()
        self.t.status, self.attempt = "awaiting" if resumed else "available", 0

    # -- claiming, running, committing ---------------------------------------------------
    @property
    def t_max(self) -> int:
        return int(self.cls.max_attempts)

    def _satisfied(self) -> bool:
        wait = self.parked
        if not isinstance(wait, Await):
            return False
        names = {s.name for s in self.pending}
        found = [n in names for n in wait.signals]
        return all(found) if wait.all else any(found)

    def claim(self) -> None:
        if len(self.t.runs) >= RUNAWAY:
            raise Diverged(f"more than {RUNAWAY} runs: the step function loops")
        self.t.status, self.attempt = "running", self.attempt + 1
        if self.pack is None:
            wait = self.names
            mine = [s for s in self.pending if wait is not None and s.name in wait.signals]
            self.pack = tuple(mine[: wait.limit] if wait is not None and wait.limit else mine)
        kids = tuple((c.status, c.result, (c.error or {}).get("type")) for c in self.kids)
        pack = tuple(s.id for s in self.pack)
        self.t.runs.append(Run(self.t.version, self.attempt, self.t.step, pack, kids))

    def _ctx(self) -> Ctx:
        return Ctx(
            copy.deepcopy(self.t.state),
            self.t.step,
            self.attempt,
            self.t_max,
            self.t.version,
            self.pack or (),
            self.kids,
            self.prior,
        )

    def execute(self) -> None:
        ctx = self._ctx()
        try:
            out = self._outcome(self.obj.step(self.t.step, ctx))
        except RateLimitedError as refused:
            return self.again("rate_limited", refused.retry_after, give_back=True)
        except Exception as exc:
            return self.failed(exc)
        if isinstance(out, RateLimited):  # like a failure: in-place changes are not stored
            return self.again("rate_limited", out.retry_after, give_back=True)
        self.move(out, ctx.state, error=None)

    def _outcome(self, out: Any) -> Any:
        if not isinstance(out, OUTCOME_TYPES):
            if self.cls._gd_kind != "job":
                raise InvalidOutcome(f"{out!r} is not an outcome")
            out = Done(out)
        for name in (getattr(out, a, None) for a in ("step", "then", "on_timeout")):
            if name is not None and name not in self.cls._gd_steps:
                raise InvalidOutcome(f"{name!r} is not a step")
        return out

    def failed(self, exc: Exception) -> None:
        self.t.error = type(exc).__name__
        if self.attempt < self.t_max:
            return self.again("retry", backoff_delay(self.cls.backoff, self.attempt), error=True)
        ctx = self._ctx()
        try:
            comp = self.obj.on_error(self.t.step, exc, ctx)
            comp = None if comp is None else self._outcome(comp)
        except Exception:
            comp = None
        if comp is None:
            self.commit("error", self.t.step, "failed")
            self.prior += 1
        else:
            self.move(comp, ctx.state, error=type(exc).__name__)

    def again(self, kind: str, delay: float, give_back: bool = False, error: bool = False) -> None:
        """The same step again later: a retry or a RateLimited (the attempt given back)."""
        self.commit(kind, self.t.step, "scheduled" if delay > 0 else "available")
        self.prior += 1
        self.attempt -= 1 if give_back else 0
        self.t.error = self.t.error if error else None

    def commit(self, kind: str, to: str | None, status: str) -> None:
        self.commit_from(self.t.step, kind, to, status)

    def commit_from(self, step: str, kind: str, to: str | None, status: str) -> None:
        to = None if status in FINISHED else to
        self.t.commits.append(Commit(self.t.version, self.attempt, step, kind, to, status))
        self.t.status = status
        self.h += 1

    def move(self, out: Any, state: Any, error: str | None) -> None:
        """A commit that moves on: the outcome's kind, the pack consumed, attempts reset."""
        version = self.t.version
        self.t.state = _json(state if getattr(out, "state", KEEP) is KEEP else out.state)
        to, status, kind = out_step(out), out_status(out), type(out).__name__.lower()
        self.commit(kind, to, status)
        self.awaiter = self.t.step if isinstance(out, Await) else self.awaiter
        for sig in self.pack or ():
            self.t.consumed[sig.id] = version + 1
            self.pending.remove(sig)
        self.t.version, self.attempt, self.prior, self.pack = version + 1, 0, 0, None
        self.t.step = to or self.t.step
        self.parked = out if isinstance(out, Await | Spawn) else None
        self.names = out if isinstance(out, Await) else None
        if isinstance(out, Done):
            self.t.result = _json(out.result)
        default = {"failed": "Fail", "cancelled": "Cancel"}.get(status)
        self.t.error = error or default
        if isinstance(out, Spawn):
            self.t.spawns.append((version, out.children))
        if isinstance(out, Await) and self._satisfied():
            self.t.status = "available"

    # -- children ------------------------------------------------------------------------
    def _outcomes(self, spawn: Spawn) -> Sequence[ChildOutcome | None]:
        return self.children_of(self.t.spawns[-1][0], spawn.children)

    @staticmethod
    def _child(o: ChildOutcome | None) -> Child:
        if o is None:
            return Child("unfinished")
        return Child(o.status, o.result, None if o.error is None else {"type": o.error})

    def join(self) -> bool:
        spawn = self.parked
        assert isinstance(spawn, Spawn)
        outs = self._outcomes(spawn)
        failed = [o for o in outs if o is not None and o.status == "failed"]
        if spawn.on_failure != "wait" and failed:
            if len(failed) > 1 or any(o is None or (o not in failed and not o.holds) for o in outs):
                raise Unpredictable(f"{spawn.on_failure}: which children finished is timing")
            gone = Child("cancelled", None, {"type": "Cancel"})
            hold = gone if spawn.on_failure == "cancel_rest" else Child("unfinished")
            self.kids = tuple(self._child(o) if o in failed else hold for o in outs)
        elif any(o is None for o in outs):
            return False
        else:
            self.kids = tuple(self._child(o) for o in outs)
        self.t.status, self.parked = "available", None
        return True


def out_step(out: Any) -> str | None:
    """The step an outcome goes on with (None when it finishes the instance)."""
    if isinstance(out, Next):
        return out.step
    return out.then if isinstance(out, Await | Sleep | Spawn) else None


def out_status(out: Any) -> str:
    """The status the commit of an outcome writes."""
    if isinstance(out, Await | Spawn):
        return "awaiting"
    if isinstance(out, Next | Sleep):
        delay = out.delay if isinstance(out, Next) else out.seconds
        later = out.run_at if isinstance(out, Next) else out.until
        return "scheduled" if later is not None or (delay or 0) > 0 else "available"
    return {Done: "done", Fail: "failed", Cancel: "cancelled"}[type(out)]
