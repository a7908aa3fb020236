"""A workload that makes every storage function of gen_durable send its statements.

A Runner runs FSMs and jobs through every outcome (Next, Await any/all with a limit and a
timeout, Sleep, Spawn with a child born failed and with ``cancel_rest``, RateLimited,
Done/Fail/Cancel, a raise and its retry), concurrency keys and rate limits that block and
defer, cron; the test drives the API (insert, insert_all, signal with and without start,
debounce, dedup, cancel, retry, get, explain) and the maintenance services (timers,
heartbeat, reaper, GC, leader, cron) directly; the operators' reads and rare branches are
then called once each, in a transaction that is rolled back.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

import gen_durable as durable
from _support.helpers import count, wait_until
from gen_durable import (
    FSM,
    Await,
    Backoff,
    Cancel,
    Cron,
    Done,
    Fail,
    Job,
    Next,
    RateLimit,
    RateLimited,
    Runner,
    Sleep,
    Spawn,
    store,
    testing,
)

FAST: dict[str, Any] = {"lease": 10.0, "poll_interval": 0.2, "grace": 5.0}
GATE = threading.Event()
REFUSED: set[int] = set()


class Part(Job):
    name = "guard.Part"
    max_attempts = 1

    def perform(self, args: dict[str, Any]) -> int:
        if args.get("fail"):
            raise RuntimeError("this part fails")
        return int(args.get("n", 0))


class Idle(FSM):
    """Waits for a signal nobody sends (until cancelled)."""

    name = "guard.Idle"
    steps = ("wait", "never")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("never", then="never")

    def never(self, ctx: durable.Context) -> Done:
        return Done()


class Tour(FSM):
    """Next, Await any (limit) and all (timeout), Sleep, Spawn, RateLimited, a raise, Done."""

    name = "guard.Tour"
    steps = ("start", "any", "all", "nap", "spawn", "limited", "flaky", "end")
    backoff = Backoff(base=0.0, jitter=0.0)
    rate_limits = {"limited": RateLimit(1000, per=1)}

    def start(self, ctx: durable.Context) -> Next:
        return Next("any")

    def any(self, ctx: durable.Context) -> Await:
        return Await("go", then="all", limit=1)

    def all(self, ctx: durable.Context) -> Await:
        return Await("x", "y", all=True, then="nap", timeout=3600, on_timeout="nap")

    def nap(self, ctx: durable.Context) -> Sleep:
        return Sleep(3600, then="spawn")

    def spawn(self, ctx: durable.Context) -> Spawn:
        # The second child's key is held by a live instance: it is born failed.
        clash = Part.new(args={"n": 2}, correlation_key=ctx.state["clash"])
        return Spawn([Part.new(args={"n": 1}), clash], then="limited")

    def limited(self, ctx: durable.Context) -> RateLimited | Next:
        if ctx.instance_id not in REFUSED:
            REFUSED.add(ctx.instance_id)
            return RateLimited(0.01)
        return Next("flaky")

    def flaky(self, ctx: durable.Context) -> Next:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return Next("end")

    def end(self, ctx: durable.Context) -> Done:
        return Done("toured")


class Ending(FSM):
    name = "guard.Ending"
    steps = ("end",)

    def end(self, ctx: durable.Context) -> Done | Fail | Cancel:
        how = ctx.state["how"]
        return Fail("no") if how == "fail" else Cancel("stop") if how == "cancel" else Done()


class Fan(FSM):
    """A failing child cancels its waiting sibling (``cancel_rest``)."""

    name = "guard.Fan"
    steps = ("fan", "join")

    def fan(self, ctx: durable.Context) -> Spawn:
        children = [Part.new(args={"fail": True}), Idle.new()]
        return Spawn(children, then="join", on_failure="cancel_rest")

    def join(self, ctx: durable.Context) -> Done:
        return Done([c.status for c in ctx.children])


class Patience(FSM):
    name = "guard.Patience"
    steps = ("wait", "got", "late")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("never", then="got", timeout=3600, on_timeout="late")

    def got(self, ctx: durable.Context) -> Done:
        return Done("got")

    def late(self, ctx: durable.Context) -> Done:
        return Done("late")


class Turnstile(Job):
    """Holds its concurrency key until the gate opens."""

    name = "guard.Turnstile"

    def perform(self, args: Any) -> None:
        assert GATE.wait(30), "the gate never opened"


class Metered(Job):
    name = "guard.Metered"
    rate_limit = RateLimit(1, per=3600, burst=1)

    def perform(self, args: Any) -> None:
        return None


def _status(engine: Engine, iid: int, *statuses: str, step: str | None = None) -> None:
    seen: list[durable.InstanceSnapshot] = []

    def there() -> bool:
        with Session(engine) as s:
            seen[:] = [durable.get(s, iid)]
        return seen[0].status in statuses and (step is None or seen[0].step == step)

    try:
        wait_until(there, timeout=30)
    except AssertionError:
        snap = seen[0]
        raise AssertionError(f"{snap.fsm} {iid} never {statuses} at {step}: {snap}") from None


def _statuses(engine: Engine, fsm: str, status: str) -> int:
    sql = "SELECT count(*) FROM gen_durable.gd_instances WHERE fsm = :fsm AND status = :status"
    return count(engine, sql, fsm=fsm, status=status)


def workload(engine: Engine) -> None:
    """Run a Runner through every outcome, the API and the maintenance services; then
    call the operators' reads directly."""
    GATE.clear()
    REFUSED.clear()  # ids repeat from one fresh database to the next
    with Session(engine) as s, s.begin():
        durable.set_queue_limit(s, "default", 16)
        durable.pause_queue(s, "guard.other")
        durable.resume_queue(s, "guard.other")
        clash = durable.insert(s, Idle, correlation_key="guard-clash")
        tour = durable.insert(s, Tour, state={"clash": "guard-clash"}, correlation_key="tour")
        durable.signal(s, tour, "go", 1)
        durable.signal(s, "tour", "go", 2, idempotency_key="second")
        durable.signal(s, "guard-started", "go", start=Idle)
        fail, cancel, done, fan, patience = durable.insert_all(
            s,
            [Ending.new(state={"how": how}) for how in ("fail", "cancel", "done")]
            + [Fan.new(), Patience.new()],
        )
        durable.insert_all(s, [Turnstile.new(concurrency_key="k") for _ in range(3)])
        durable.insert_all(s, [Metered.new(), Metered.new()])
        for _ in range(2):
            durable.insert(s, Ending, state={"how": "done"}, correlation_key="later", debounce=60)
        durable.insert(s, Ending, state={"how": "done"}, correlation_key="dedup", dedup_window=60)
    schedule = Cron("* * * * *", Part, args={"n": 0}, name="guard-cron", grace=120)
    with Runner(engine, queues={"default": 6}, history="all", cron=[schedule], **FAST) as runner:
        _status(engine, tour, "awaiting", step="nap")
        for name in ("x", "y"):
            with Session(engine) as s, s.begin():
                durable.signal(s, tour, name)
        _status(engine, tour, "scheduled", step="spawn")
        _status(engine, patience, "awaiting")
        testing.advance(engine, 3601)
        runner.scheduler.run_once()
        wait_until(lambda: _statuses(engine, Turnstile.name, "blocked") == 2, timeout=30)
        runner.heartbeat.run_once()  # while the Turnstile holds a lease to extend
        GATE.set()
        for iid, status in [(tour, "done"), (patience, "done"), (fan, "done"), (done, "done")]:
            _status(engine, iid, status)
        _status(engine, fail, "failed")
        _status(engine, cancel, "cancelled")
        wait_until(lambda: _statuses(engine, Turnstile.name, "done") == 3, timeout=30)
        assert runner.leader is not None and runner.cron is not None
        runner.leader.run_once()
        runner.cron.run_once()
        runner.reaper.run_once()
        runner.gc.run_once()
        with Session(engine) as s, s.begin():
            for iid in (tour, patience, clash, fan):
                durable.get(s, iid)
                durable.explain(s, iid)
            durable.retry(s, fail)
            durable.cancel(s, clash)
    _operator_reads(engine, tour)


def _operator_reads(engine: Engine, tour: int) -> None:
    """What the CLI, the dashboard and the testing helpers read, and the rare branches."""
    with engine.connect() as conn, conn.begin() as tx:
        store.explain.database_now(conn, None)
        store.claims.claim(conn, "guard.none", [Idle.name], 1, "guard", 30, None)  # by hand
        store.explain.pending_signals(conn, tour)
        store.explain.key_holders(conn, "k")
        store.explain.unfinished_children(conn, tour)
        store.explain.live_nodes(conn, timedelta(seconds=60), None)
        store.explain.ahead_in_queue(conn, "default", 0, None, tour, 10)
        store.history.of_instance(conn, tour, 10)
        store.history.edges(conn, Tour.name)
        store.history.record_released(conn, [tour], "guard", None)
        store.history.finishing_attempts(conn, [tour])
        store.history.reruns_of(conn, tour, 10)
        page = {"fsm": Tour.name, "status": "done"}
        store.dashboard.instance_page(conn, page, before_id=None, after_id=None, limit=10)
        store.dashboard.instance_page(conn, page, before_id=None, after_id=tour, limit=10)
        store.dashboard.finished_per_minute(conn, 60, None)
        store.dashboard.unfinished_counts(conn)
        store.dashboard.descendants(conn, tour, 3, 10)
        store.dashboard.steps_now(conn, Tour.name)
        store.dashboard.classes(conn)
        store.queries.list_instances(conn, fsm=Tour.name, status="done", before_id=tour + 1)
        store.queries.counts(conn)
        store.queries.step_counts(conn)
        store.queries.throughput(conn, None)
        audit = store.audit.record(conn, "prune", target="guard", details={"deleted": 0})
        store.audit.add_count(conn, audit, "deleted", 1)
        store.audit.listing(conn, action="prune", target=str(tour), actor="guard")
        store.maintenance.count_garbage(conn, 0, None)
        store.maintenance.stage_due(conn, 10, None)
        store.maintenance.list_nodes(conn, None)
        store.fleet.runners(conn, None)
        store.fleet.runner(conn, "guard", None)
        store.fleet.oldest_waiting(conn, None)
        everything = store.bulk.Where(("failed",), Tour.name, "s", "q", None, "k%")
        store.bulk.preview(conn, everything, 3)
        store.bulk.batch(conn, everything, 0, tour, 10)
        store.bulk.lock_audit_row(conn, audit)
        store.bulk.save_progress(conn, audit, tour, False)
        store.ratelimits.buckets(conn, ["guard:*:"], None)
        store.leases.extend(conn, [(tour, uuid.uuid4())], 10.0, None)  # lost: checked again
        store.leases.release(conn, [(tour, uuid.uuid4())], None)
        store.signals.pending_for(conn, [tour])
        store.queries.list_instances(conn, stuck=True)
        store.upgrades.park(conn, tour, uuid.uuid4(), {"type": "guard"}, None)
        store.upgrades.count_outdated(conn, Tour.name, 2)
        store.upgrades.lock_outdated(conn, Tour.name, 2, 0, 10)
        store.upgrades.write_upgraded(conn, [(tour, '{"a": 1}')], 2, None)
        store.upgrades.lock_movable(conn, tour)
        store.upgrades.move(conn, tour, "s", None)
        store.upgrades.live_rows(conn, Tour.name, 10)
        store.upgrades.known_by_live_runners(conn, Tour.name)
        store.notify.notify_finished(conn, [tour])
        store.notify.announce(conn, ["default"], [tour])
        store.queues.settings(conn)
        store.concurrency.unstrand(conn, 10, None)
        store.testing.runnable_queues(conn, [Tour.name])
        store.testing.instances_of(conn, Tour.name, 10)
        store.testing.count_per_class(conn)
        store.testing.delete_everything(conn)
        tx.rollback()
