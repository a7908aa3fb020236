"""The Runner against real PostgreSQL: steps, signals, retries, timers, cancel, shutdown."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from _support.helpers import backend_waiting_on_lock, scalar, snapshot, wait_status, wait_until
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Cancel, Done, Fail, Job, Next, Runner, Sleep
from gen_durable.errors import ConfigurationError

FAST = {"lease": 2.0, "poll_interval": 0.2, "grace": 2.0}


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


def send(engine: Engine, target: int | str, name: str, payload: Any = None) -> durable.SignalResult:
    with Session(engine) as s, s.begin():
        return durable.signal(s, target, name, payload)


class Checkout(FSM):
    name = "test.Checkout"
    queue = "checkout"
    steps = ("start", "ship")

    @attrs.define
    class State:
        order: int

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Await("payment_confirmed", then="ship")
        return Done({"order": ctx.state.order, "paid": ctx.awaited[0].payload})


def test_checkout_parks_until_signalled_by_key_then_ships(engine: Engine) -> None:
    reports: list[durable.StepReport] = []
    iid = insert(engine, Checkout, state={"order": 42}, correlation_key="order:42")
    with Runner(engine, queues={"checkout": 2}, observer=reports.append, **FAST):
        parked = wait_status(engine, iid, "awaiting")
        assert parked.step == "ship" and parked.awaiting == ("payment_confirmed",)
        result = send(engine, "order:42", "payment_confirmed", {"amount": 100})
        assert result.instance_id == iid and not result.duplicate
        done = wait_status(engine, iid, "done")
    assert done.result == {"order": 42, "paid": {"amount": 100}}
    assert [(r.step, r.decision.kind) for r in reports] == [("start", "await"), ("ship", "done")]
    assert all(s.consumed_at is not None for s in done.signals)
    assert done.version == 2


def test_signal_sent_before_the_await_is_kept_and_delivered(engine: Engine) -> None:
    iid = insert(engine, Checkout, state={"order": 7}, correlation_key="order:7")
    send(engine, "order:7", "payment_confirmed", {"early": True})
    before = snapshot(engine, iid)
    assert before.status == "available" and before.signals[0].consumed_at is None
    with Runner(engine, queues={"checkout": 2}, **FAST):
        done = wait_status(engine, iid, "done")
    assert done.result == {"order": 7, "paid": {"early": True}}


class Pipeline(FSM):
    name = "test.Pipeline"
    steps = ("a", "b", "c")

    @attrs.define
    class State:
        trail: list[str] = attrs.Factory(list)

    def a(self, ctx: durable.Context) -> Next:
        ctx.state.trail.append("a")  # in-place changes are kept when state= is omitted
        return Next("b")

    def b(self, ctx: durable.Context) -> Next:
        return Next("c", state=self.State(trail=[*ctx.state.trail, "b"]), delay=0.3)

    def c(self, ctx: durable.Context) -> Done:
        ctx.state.trail.append("c")
        ctx.session.execute(text("SELECT 1"))
        return Done(ctx.state.trail)


def test_next_carries_state_and_delay_through_steps(engine: Engine) -> None:
    iid = insert(engine, Pipeline)
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert done.result == ["a", "b", "c"]
    assert done.state == {"trail": ["a", "b", "c"]}
    assert done.version == 3


class Flaky(Job):
    name = "test.Flaky"
    max_attempts = 3
    backoff = Backoff(base=0.05, factor=1, max=0.05, jitter=0)
    runs = 0

    def perform(self, args: dict[str, int]) -> dict[str, int]:
        type(self).runs += 1
        if type(self).runs < args["succeed_on"]:
            raise RuntimeError(f"boom {type(self).runs}")
        return {"runs": type(self).runs}


def test_job_retries_with_backoff_then_succeeds(engine: Engine) -> None:
    Flaky.runs = 0
    iid = insert(engine, Flaky, args={"succeed_on": 3})
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert done.result == {"runs": 3}
    assert Flaky.runs == 3


def test_job_fails_after_max_attempts_with_the_error_recorded(engine: Engine) -> None:
    Flaky.runs = 0
    iid = insert(engine, Flaky, args={"succeed_on": 99})
    with Runner(engine, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert Flaky.runs == 3
    assert failed.attempt == 3
    assert failed.error["type"] == "RuntimeError"
    assert "boom 3" in failed.error["message"]
    assert "Traceback" in failed.error["traceback"]


class Compensated(FSM):
    name = "test.Compensated"
    steps = ("charge", "refund")
    max_attempts = 2
    backoff = Backoff(base=0.01, jitter=0)

    def charge(self, ctx: durable.Context) -> Done:
        raise ValueError("card declined")

    def refund(self, ctx: durable.Context) -> Cancel:
        return Cancel("refunded after decline")

    def on_error(self, name: str, error: BaseException, ctx: durable.Context) -> Next | None:
        assert isinstance(error, ValueError)
        return Next("refund")


def test_on_error_compensates_once_attempts_are_used_up(engine: Engine) -> None:
    iid = insert(engine, Compensated)
    with Runner(engine, **FAST):
        final = wait_status(engine, iid, "cancelled")
    assert final.step == "refund"
    assert final.error == {"type": "Cancel", "message": "refunded after decline"}


class BadOutcome(FSM):
    name = "test.BadOutcome"
    steps = ("start",)
    max_attempts = 1

    def start(self, ctx: durable.Context) -> Next:
        return Next("nowhere")


def test_an_outcome_naming_an_undeclared_step_is_a_typed_error(engine: Engine) -> None:
    iid = insert(engine, BadOutcome)
    with Runner(engine, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert failed.error["type"] == "InvalidOutcome"
    assert "nowhere" in failed.error["message"]


class Waiter(FSM):
    name = "test.Waiter"
    steps = ("wait", "got", "timed_out")

    def wait(self, ctx: durable.Context) -> Await:
        timeout = ctx.state.get("timeout")
        if timeout is None:
            return Await("a", "b", then="got")
        return Await("a", "b", then="got", timeout=timeout, on_timeout="timed_out")

    def got(self, ctx: durable.Context) -> Done:
        return Done([s.name for s in ctx.awaited])

    def timed_out(self, ctx: durable.Context) -> Fail:
        assert ctx.awaited == ()
        return Fail("no signal in time")


def test_await_any_of_several_signals(engine: Engine) -> None:
    iid = insert(engine, Waiter, state={"timeout": None})
    with Runner(engine, **FAST):
        wait_status(engine, iid, "awaiting")
        send(engine, iid, "b", 1)
        done = wait_status(engine, iid, "done")
    assert done.result == ["b"]


def test_await_timeout_resumes_at_on_timeout_with_an_empty_pack(engine: Engine) -> None:
    iid = insert(engine, Waiter, state={"timeout": 0.3})
    with Runner(engine, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert failed.step == "timed_out"
    assert failed.error == {"type": "Fail", "message": "no signal in time"}


class Napper(FSM):
    name = "test.Napper"
    steps = ("nap", "wake")

    def nap(self, ctx: durable.Context) -> Sleep:
        return Sleep(0.5, then="wake")

    def wake(self, ctx: durable.Context) -> Done:
        return Done()


def test_sleep_is_a_durable_timer_that_fires_after_its_due_time(engine: Engine) -> None:
    iid = insert(engine, Napper)
    with Runner(engine, **FAST):
        sleeping = wait_status(engine, iid, "scheduled")
        assert sleeping.step == "wake" and sleeping.run_at is not None
        done = wait_status(engine, iid, "done")
    assert done.finished_at is not None and done.finished_at >= sleeping.run_at


def test_delayed_insert_is_scheduled_until_its_time(engine: Engine) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    far = insert(engine, Napper, run_at=later)
    soon = insert(engine, Napper, delay=0.3)
    assert snapshot(engine, far).status == "scheduled"
    with Runner(engine, **FAST):
        wait_status(engine, soon, "done")
        assert snapshot(engine, far).status == "scheduled"


class Blocker(FSM):
    name = "test.Blocker"
    steps = ("hold",)
    release = threading.Event()
    entered = threading.Event()
    saw_cancel: list[bool] = []

    def hold(self, ctx: durable.Context) -> Done:
        type(self).entered.set()
        ctx.session.execute(text("CREATE TABLE IF NOT EXISTS gd_test_marks (id int)"))
        ctx.session.execute(text("INSERT INTO gd_test_marks VALUES (1)"))
        type(self).release.wait(10)
        type(self).saw_cancel.append(ctx.cancelled)
        return Done("should be fenced out")


def test_cancel_of_a_running_instance_fences_its_commit(engine: Engine) -> None:
    Blocker.release.clear()
    Blocker.entered.clear()
    Blocker.saw_cancel.clear()
    iid = insert(engine, Blocker)
    reports: list[durable.StepReport] = []
    with Runner(engine, observer=reports.append, lease=1.5, heartbeat=0.2, poll_interval=0.2):
        assert Blocker.entered.wait(10)
        with Session(engine) as s, s.begin():
            assert durable.cancel(s, iid, "operator") is True
        time.sleep(0.6)  # a heartbeat or two: the runtime learns its lease is gone
        Blocker.release.set()
        wait_until(lambda: reports)
    final = snapshot(engine, iid)
    assert final.status == "cancelled" and final.result is None
    assert reports[0].committed is False
    assert Blocker.saw_cancel == [True]
    # the step's ctx.session writes rolled back with the fenced-out commit
    assert scalar(engine, "SELECT to_regclass('gd_test_marks') IS NULL") is True


def test_retry_runs_a_failed_instance_again(engine: Engine) -> None:
    Flaky.runs = 0
    iid = insert(engine, Flaky, args={"succeed_on": 4}, max_attempts=1)
    with Runner(engine, **FAST):
        wait_status(engine, iid, "failed")
        with Session(engine) as s, s.begin():
            assert durable.retry(s, iid) == iid
        wait_status(engine, iid, "failed")
        with Session(engine) as s, s.begin():
            durable.retry(s, iid)
        wait_status(engine, iid, "failed")
        with Session(engine) as s, s.begin():
            durable.retry(s, iid)
        done = wait_status(engine, iid, "done")
    assert done.result == {"runs": 4}


class Unknown(FSM):
    name = "test.UnknownToRunner"
    steps = ("go",)

    def go(self, ctx: durable.Context) -> Done:
        return Done()


def test_runner_never_claims_a_class_it_does_not_know(engine: Engine) -> None:
    stranger = insert(engine, Unknown)
    known = insert(engine, Napper)
    with Runner(engine, fsms=[Napper], **FAST):
        wait_status(engine, known, "done")
        time.sleep(0.5)
        assert snapshot(engine, stranger).status == "available"


def test_pool_too_small_is_refused_with_a_clear_error(db_url: str) -> None:
    small = create_engine(db_url, pool_size=5, max_overflow=0)
    try:
        with pytest.raises(ConfigurationError, match="pool_size=20"):
            Runner(small, queues={"default": 10, "checkout": 2})
    finally:
        small.dispose()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queues": {}},
        {"queues": {"default": 0}},
        {"queues": {"": 1}},
        {"lease": 0},
        {"lease": 1.0, "heartbeat": 2.0},
        {"grace": -1},
    ],
)
def test_bad_runner_configuration_is_refused(engine: Engine, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Runner(engine, **kwargs)


class Lingering(FSM):
    name = "test.Lingering"
    steps = ("linger",)
    go = threading.Event()

    def linger(self, ctx: durable.Context) -> Done:
        type(self).go.wait(5)
        return Done()


def test_shutdown_releases_steps_still_running_after_the_grace_period(engine: Engine) -> None:
    Lingering.go.clear()
    iid = insert(engine, Lingering)
    runner = Runner(engine, lease=5, poll_interval=0.2, grace=0.3).start()
    wait_status(engine, iid, "running")
    runner.stop()
    released = snapshot(engine, iid)
    Lingering.go.set()
    assert released.status == "available"
    assert released.attempt == 0  # the attempt is given back
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_nodes") == 0


class Interruptible(Job):
    name = "test.Interruptible"
    seen: list[str] = []
    """The instance's status, read on a connection of its own, when the step saw
    ``ctx.cancelled``."""
    told = threading.Event()

    def perform(self, args: Any, ctx: durable.Context) -> None:
        while not ctx.cancelled:
            time.sleep(0.01)
        type(self).told.set()
        engine = create_engine(args["url"])
        try:
            status = scalar(engine, "SELECT status FROM gen_durable.gd_instances")
        finally:
            engine.dispose()
        type(self).seen.append(str(status))
        raise RuntimeError("interrupted")


def test_a_step_told_to_stop_at_shutdown_finds_its_claim_already_given_back(
    engine: Engine, db_url: str
) -> None:
    """Regression: the cancel was signalled before the release; a step that stopped at
    once could commit its retry first (attempt kept, not given back)."""
    Interruptible.seen.clear()
    Interruptible.told.clear()
    iid = insert(engine, Interruptible, args={"url": db_url})
    runner = Runner(engine, lease=30, poll_interval=0.2, grace=0.1).start()
    wait_status(engine, iid, "running")
    with engine.connect() as holder:  # the release must wait for this row lock
        holder.begin()
        holder.execute(
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :i FOR UPDATE"), {"i": iid}
        )
        stopping = threading.Thread(target=runner.stop)
        stopping.start()
        backend_waiting_on_lock(engine)
        # The step polls every 10 ms: told now, it would stop while its claim is held.
        # (The wait can only fail the faulty order, never the right one.)
        assert not Interruptible.told.wait(1.0), "told to stop before the release"
        holder.rollback()
    stopping.join(30)
    assert Interruptible.seen == ["available"]
    released = snapshot(engine, iid)
    assert (released.status, released.attempt) == ("available", 0)


def test_gc_deletes_finished_instances_past_retention_only(engine: Engine) -> None:
    old = insert(engine, Napper)
    live = insert(engine, Napper, delay=3600)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET status = 'done', "
                "finished_at = now() - interval '2 days' WHERE id = :id"
            ),
            {"id": old},
        )
    with Runner(engine, gc_retention=86400, gc_interval=0.2, **FAST):
        wait_until(lambda: scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 1)
    assert snapshot(engine, live).status == "scheduled"


class KeyRecorder(Job):
    name = "test.KeyRecorder"
    max_attempts = 3
    backoff = Backoff(base=0.01, jitter=0)
    keys: list[str] = []

    def perform(self, args: Any, ctx: durable.Context) -> str:
        type(self).keys.append(ctx.idempotency_key)
        if len(type(self).keys) < 3:
            raise RuntimeError("transient")
        return ctx.idempotency_key


def test_idempotency_key_is_stable_across_retries_of_a_step(engine: Engine) -> None:
    KeyRecorder.keys.clear()
    iid = insert(engine, KeyRecorder)
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert len(KeyRecorder.keys) == 3 and len(set(KeyRecorder.keys)) == 1
    assert done.result == KeyRecorder.keys[0]


class Overrun(FSM):
    name = "test.Overrun"
    steps = ("slow",)
    timeout = 0.3
    runs: list[tuple[int, bool]] = []

    def slow(self, ctx: durable.Context) -> Done:
        first = not type(self).runs
        type(self).runs.append((ctx.attempt, first))
        ctx.session.execute(
            text("INSERT INTO gd_test_overrun VALUES (:r)"), {"r": len(type(self).runs)}
        )
        if first:
            time.sleep(2.5)  # past its timeout: the lease is no longer extended
        return Done(len(type(self).runs))


def test_a_zombie_past_its_timeout_is_retried_elsewhere_and_its_commit_fenced(
    engine: Engine,
) -> None:
    Overrun.runs.clear()
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE gd_test_overrun (run int)"))
    reports: list[durable.StepReport] = []
    iid = insert(engine, Overrun)
    with Runner(
        engine,
        observer=reports.append,
        lease=0.8,
        heartbeat=0.1,
        poll_interval=0.1,
        reaper_interval=0.1,
    ):
        done = wait_status(engine, iid, "done")
        wait_until(lambda: len(reports) == 2, timeout=10)
    assert done.result == 2  # the second run's outcome
    assert [r.committed for r in sorted(reports, key=lambda r: r.attempt)] == [False, True]
    assert scalar(engine, "SELECT array_agg(run) FROM gd_test_overrun") == [2]


class ShipOnSecondTry(FSM):
    name = "test.ShipOnSecondTry"
    steps = ("start", "ship")
    backoff = Backoff(base=0.01, jitter=0)
    packs: list[list[Any]] = []

    def start(self, ctx: durable.Context) -> Await:
        return Await("paid", then="ship")

    def ship(self, ctx: durable.Context) -> Done:
        type(self).packs.append([s.payload for s in ctx.awaited])
        if ctx.attempt == 1:
            raise RuntimeError("carrier down")
        return Done(ctx.awaited[0].payload)


def test_a_retried_step_gets_the_same_signal_pack_again(engine: Engine) -> None:
    """Regression: a retry used to clear what the step awaited, so attempt 2 saw no signal."""
    ShipOnSecondTry.packs.clear()
    iid = insert(engine, ShipOnSecondTry)
    with Runner(engine, **FAST):
        wait_status(engine, iid, "awaiting")
        send(engine, iid, "paid", {"amount": 5})
        done = wait_status(engine, iid, "done")
    assert ShipOnSecondTry.packs == [[{"amount": 5}], [{"amount": 5}]]
    assert done.result == {"amount": 5}
    assert all(s.consumed_at is not None for s in done.signals)


class Mutator(Job):
    name = "test.Mutator"
    backoff = Backoff(base=0.01, jitter=0)
    seen: list[list[int]] = []

    def perform(self, args: dict[str, Any]) -> list[int]:
        args["trail"].append(len(type(self).seen))
        type(self).seen.append(list(args["trail"]))
        if len(type(self).seen) < 3:
            raise RuntimeError("again")
        return list(args["trail"])


def test_untyped_state_changed_by_a_failed_attempt_does_not_leak_into_the_retry(
    engine: Engine,
) -> None:
    """Regression: in-place changes to plain JSON args used to be stored with the retry."""
    Mutator.seen.clear()
    iid = insert(engine, Mutator, args={"trail": []})
    with Runner(engine, **FAST):
        done = wait_status(engine, iid, "done")
    assert Mutator.seen == [[0], [1], [2]]
    assert done.state == {"trail": [2]} and done.result == [2]  # only the last attempt kept


class Spoiler(FSM):
    """Changes its untyped state in place, then fails: on_error must see the stored state."""

    name = "test.Spoiler"
    steps = ("spoil",)
    max_attempts = 1
    seen: list[Any] = []

    def spoil(self, ctx: durable.Context) -> Done:
        ctx.state["items"].append("spoiled")
        ctx.state["extra"] = True
        raise RuntimeError("spoiled")

    def on_error(self, name: str, error: BaseException, ctx: durable.Context) -> Fail:
        type(self).seen.append(ctx.state)
        return Fail("compensated")


def test_on_error_sees_the_stored_state_not_the_failed_attempts_changes(engine: Engine) -> None:
    """The step record is parsed from the claimed row's state text, not deep-copied: each
    use parses its own copy, so the failing attempt's in-place changes stay its own."""
    Spoiler.seen.clear()
    iid = insert(engine, Spoiler, state={"items": ["a"]})
    with Runner(engine, **FAST):
        failed = wait_status(engine, iid, "failed")
    assert Spoiler.seen == [{"items": ["a"]}]
    assert failed.state == {"items": ["a"]}


class Patient(FSM):
    name = "test.Patient"
    steps = ("wait_for_cancel",)
    timeout = 0.2
    flipped: list[bool] = []

    def wait_for_cancel(self, ctx: durable.Context) -> Done:
        deadline = time.monotonic() + 5
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        type(self).flipped.append(ctx.cancelled)
        return Done()


def test_ctx_cancelled_turns_true_once_a_step_is_past_its_timeout(engine: Engine) -> None:
    """Regression: a step past its timeout was never told that its lease would lapse."""
    Patient.flipped.clear()
    iid = insert(engine, Patient)
    with Runner(engine, lease=3, heartbeat=0.1, poll_interval=0.2):
        wait_until(lambda: Patient.flipped, timeout=10)
        wait_status(engine, iid, "done", "available", "running", "scheduled")
    assert Patient.flipped[0] is True


class Thinker(FSM):
    name = "test.Thinker"
    steps = ("think",)
    thinking = threading.Event()
    proceed = threading.Event()

    def think(self, ctx: durable.Context) -> Done:
        type(self).thinking.set()
        type(self).proceed.wait(10)
        return Done()


def test_no_transaction_is_open_while_a_step_without_ctx_session_runs(engine: Engine) -> None:
    Thinker.thinking.clear()
    Thinker.proceed.clear()
    iids = [insert(engine, Thinker) for _ in range(3)]
    with Runner(engine, **FAST):
        assert Thinker.thinking.wait(10)
        wait_until(
            lambda: (
                scalar(
                    engine,
                    "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'running'",
                )
                == 3
            )
        )
        # A transaction held across step code would stay idle in transaction for the whole
        # time the steps are blocked, so it shows in every sample. Service transactions are
        # idle for a moment between their statements (longer on a starved machine); they
        # show in a few samples at most, never in all of them.
        samples = [idle_transactions(engine) for _ in range(20) if time.sleep(0.05) is None]
        Thinker.proceed.set()
        for iid in iids:
            wait_status(engine, iid, "done")
    held_throughout = set.intersection(*(set(sample) for sample in samples))
    assert not held_throughout, [sample for sample in samples if sample]


def idle_transactions(engine: Engine) -> dict[tuple[int, datetime], str]:
    """The transactions of this database now waiting on their client, by backend and start."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, xact_start, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state LIKE 'idle in transaction%'"
            )
        ).all()
    return {(row.pid, row.xact_start): row.query for row in rows}
