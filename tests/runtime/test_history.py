"""The transition history (gd_history) against real PostgreSQL.

A row exists exactly when its transition committed: written in the commit's own
transaction (the grouped commit and a step's ``ctx.session`` alike), never by a
fenced-out or rolled-back one; ``errors`` keeps failing steps with their tracebacks,
``none`` writes nothing; GC deletes it with its instance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from _support.helpers import scalar, transition_for, wait_status
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Fail, Job, Next, Runner, store
from gen_durable.domain.decide import Transition
from gen_durable.errors import ConfigurationError, DefinitionError
from gen_durable.store.history import MAX_ERROR_CHARS, clip, error_text
from gen_durable.testing import drain

FAST = {"lease": 5.0, "poll_interval": 0.1, "grace": 2.0}


class Order(FSM):
    name = "history.Order"
    steps = ("start", "ship")
    history = "all"

    def start(self, ctx: durable.Context) -> Await:
        return Await("paid", then="ship")

    def ship(self, ctx: durable.Context) -> Done:
        return Done({"paid": ctx.awaited[0].payload})


class Flaky(FSM):
    """Fails its first two attempts at ``charge``; a ``bad`` state gives up with Fail."""

    name = "history.Flaky"
    steps = ("charge", "notify")
    history = "errors"
    max_attempts = 5
    backoff = durable.Backoff(base=0.0, factor=1.0, max=0.0, jitter=0.0)

    def charge(self, ctx: durable.Context) -> Any:
        if ctx.state.get("bad"):
            return Fail("card declined")
        if ctx.attempt < 3:
            raise RuntimeError(f"gateway down (attempt {ctx.attempt})")
        return Next("notify")

    def notify(self, ctx: durable.Context) -> Done:
        return Done()


class Quiet(Job):
    name = "history.Quiet"

    def perform(self, args: Any) -> str:
        return "ok"


class Silenced(Job):
    name = "history.Silenced"
    history = "none"

    def perform(self, args: Any) -> str:
        return "ok"


class SelfCancelling(FSM):
    """Cancels itself from inside its step: the lease is revoked, the commit fenced out."""

    name = "history.SelfCancelling"
    steps = ("run",)
    history = "all"

    def run(self, ctx: durable.Context) -> Done:
        with Session(ENGINES[-1]) as s, s.begin():
            durable.cancel(s, ctx.instance_id, "from inside")
        return Done()


class Effects(FSM):
    """Writes through ``ctx.session``; a duplicate key fails only when that session commits."""

    name = "history.Effects"
    steps = ("write",)
    history = "all"
    backoff = durable.Backoff(base=3600.0, jitter=0.0)  # the retry waits: drain stops

    def write(self, ctx: durable.Context) -> Done:
        ctx.session.execute(
            text("INSERT INTO gd_test_effects (k) VALUES (:k)"), {"k": ctx.state["k"]}
        )
        return Done()


ENGINES: list[Engine] = []


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The test's engine, reachable from step code (SelfCancelling)."""
    ENGINES.append(engine)
    yield engine
    ENGINES.remove(engine)


def history(engine: Engine, instance_id: int) -> list[Any]:
    with engine.connect() as conn:
        return store.history.of_instance(conn, instance_id, 1000)


def count(engine: Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM gen_durable.gd_history"))  # type: ignore[arg-type]


def add(engine: Engine, *specs: durable.InsertSpec) -> list[int]:
    with Session(engine) as s, s.begin():
        return durable.insert_all(s, specs)


def test_all_records_each_committed_transition_once(db: Engine) -> None:
    (iid,) = add(db, Order.new(correlation_key="o-1"))
    drain(db)
    with Session(db) as s, s.begin():
        durable.signal(s, "o-1", "paid", 42)
    drain(db)
    drain(db)  # nothing runnable: nothing more is written
    rows = history(db, iid)
    assert [(r.from_step, r.to_step, r.kind, r.status) for r in rows] == [
        ("start", "ship", "await", "awaiting"),
        ("ship", None, "done", "done"),
    ]
    assert [(r.fsm, r.version, r.attempt, r.error) for r in rows] == [
        (Order.name, 0, 1, None),
        (Order.name, 1, 1, None),
    ]
    assert all(r.duration_ms >= 0 and r.at is not None for r in rows)
    assert rows[0].id < rows[1].id


def test_errors_keeps_failing_steps_with_their_tracebacks(db: Engine) -> None:
    good, bad = add(db, Flaky.new(), Flaky.new(state={"bad": True}))
    drain(db)
    rows = history(db, good)
    # Two attempts raised; the third and the notify step succeeded and are not kept.
    assert [(r.from_step, r.to_step, r.kind, r.attempt) for r in rows] == [
        ("charge", "charge", "retry", 1),
        ("charge", "charge", "retry", 2),
    ]
    for row in rows:
        assert row.error.startswith(f"RuntimeError: gateway down (attempt {row.attempt})")
        assert "Traceback (most recent call last)" in row.error
        assert 'raise RuntimeError(f"gateway down' in row.error
    (failed,) = history(db, bad)
    assert (failed.kind, failed.to_step, failed.status) == ("fail", None, "failed")
    assert failed.error == "Fail: card declined"


def test_none_writes_nothing_and_the_class_setting_beats_the_runner_default(db: Engine) -> None:
    quiet, silenced = add(db, Quiet.new(), Silenced.new())
    drain(db)  # the executor's own default is "none"
    assert count(db) == 0
    loud, still = add(db, Quiet.new(), Silenced.new())
    with Runner(db, {"default": 2}, history="all", **FAST):
        wait_status(db, loud, "done")
        wait_status(db, still, "done")
    assert [(r.kind, r.status) for r in history(db, loud)] == [("done", "done")]
    assert history(db, still) == [] and history(db, quiet) == [] and history(db, silenced) == []


def test_a_fenced_out_commit_writes_no_history(db: Engine) -> None:
    (iid,) = add(db, SelfCancelling.new())
    (report,) = drain(db)
    assert report.committed is False and report.decision.kind == "done"
    # Only the cancel that fenced it out, recorded by the cancel itself: no "done".
    assert [(r.kind, r.status) for r in history(db, iid)] == [("outside_cancel", "cancelled")]


def _claimed(engine: Engine, cls: type[durable.FSM], n: int) -> list[Any]:
    add(engine, *(cls.new() for _ in range(n)))
    with engine.begin() as conn:
        return list(store.claims.claim(conn, "default", [cls.name], n, "test", 30, None))


def _done(row: Any, *, token: uuid.UUID | None = None) -> Transition:
    done = transition_for(
        row, fsm=Order.name, from_step=row.step, attempt=row.attempt, history=True, duration_ms=1.0
    )
    return done if token is None else attrs.evolve(done, lease_token=token)


def test_the_history_row_lands_with_its_transition_or_not_at_all(db: Engine) -> None:
    first, second = _claimed(db, Order, 2)
    stale = _done(first, token=uuid.uuid4())
    with db.begin() as conn:  # one stale token in a group: only the other row lands
        landed = store.transitions.commit(conn, [stale, _done(second)], None)
    assert set(landed) == {second.id}
    assert history(db, first.id) == [] and len(history(db, second.id)) == 1
    with db.connect() as conn, conn.begin() as tx:  # a group rolled back writes none
        assert set(store.transitions.commit(conn, [_done(first)], None)) == {first.id}
        tx.rollback()
    assert history(db, first.id) == []
    with db.begin() as conn:
        store.transitions.commit(conn, [_done(first)], None)
    with db.begin() as conn:  # the same claim cannot commit (or record) twice
        assert store.transitions.commit(conn, [_done(first)], None) == {}
    assert len(history(db, first.id)) == 1


def test_a_step_session_commit_records_with_it_and_a_refused_one_records_the_retry(
    db: Engine,
) -> None:
    with db.begin() as conn:
        conn.execute(
            text("CREATE TABLE gd_test_effects (k text UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        )
        conn.execute(text("INSERT INTO gd_test_effects VALUES ('taken')"))
    fine, refused = add(db, Effects.new(state={"k": "new"}), Effects.new(state={"k": "taken"}))
    reports = drain(db)
    assert [r.committed for r in reports] == [True, True]
    assert [(r.kind, r.status) for r in history(db, fine)] == [("done", "done")]
    # The step's session failed at COMMIT (the deferred unique key): its writes and its
    # Done rolled back together; only the retry that replaced it is recorded.
    (retry,) = history(db, refused)
    assert (retry.kind, retry.to_step, retry.attempt) == ("retry", "write", 1)
    assert "UniqueViolation" in retry.error or "IntegrityError" in retry.error
    keys = scalar(db, "SELECT string_agg(k, ',' ORDER BY k) FROM gd_test_effects")
    assert keys == "new,taken"


def test_gc_deletes_history_with_its_instance_and_keeps_live_ones(db: Engine) -> None:
    finished, live = add(db, Order.new(correlation_key="o-gc"), Order.new())
    drain(db)
    with Session(db) as s, s.begin():
        durable.signal(s, "o-gc", "paid", 1)
    drain(db)
    assert len(history(db, finished)) == 2 and len(history(db, live)) == 1
    with db.begin() as conn:
        assert store.maintenance.count_garbage(conn, 0, None) == 1
        assert store.maintenance.collect_garbage(conn, 0, 100, None) == 1
    assert history(db, finished) == []
    assert [r.kind for r in history(db, live)] == ["await"]


def test_history_settings_are_validated() -> None:
    with pytest.raises(DefinitionError, match="history must be one of"):

        class Bad(Job):
            name = "history.Bad"
            history = "sometimes"  # type: ignore[assignment]

            def perform(self, args: Any) -> None:
                return None

    unused = create_engine("postgresql+psycopg://nobody@localhost/none")  # never connected
    with pytest.raises(ConfigurationError, match="history must be one of"):
        Runner(unused, {"default": 1}, history="most")  # type: ignore[arg-type]


def test_error_text_keeps_the_head_and_the_end_of_a_long_traceback() -> None:
    frames = "".join(f'  File "app.py", line {n}, in f{n}\n' for n in range(2000))
    text_ = error_text(
        {"type": "KeyError", "message": "'sku'", "traceback": frames + "KeyError: 'sku'\n"}
    )
    assert text_ is not None and len(text_) == MAX_ERROR_CHARS
    assert text_.startswith("KeyError: 'sku'\n")
    assert text_.endswith("KeyError: 'sku'") and "characters cut" in text_
    assert clip("short") == "short"
    assert error_text(None) is None
