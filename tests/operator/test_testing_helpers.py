"""gen_durable.testing against real PostgreSQL: drain, advance, assert_inserted/signalled."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from _support.helpers import ROOT, scalar, snapshot
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Backoff, Done, Fail, Job, Next, Sleep, Spawn
from gen_durable.errors import ValidationError
from gen_durable.testing import (
    StepLimitExceeded,
    advance,
    assert_inserted,
    assert_signalled,
    drain,
    reset,
)


def insert(engine: Engine, cls: Any, **kwargs: Any) -> int:
    with Session(engine) as s, s.begin():
        return durable.insert(s, cls, **kwargs)


def send(engine: Engine, target: int | str, name: str, payload: Any = None) -> None:
    with Session(engine) as s, s.begin():
        durable.signal(s, target, name, payload)


class Pipeline(FSM):
    name = "th.Pipeline"
    steps = ("a", "b", "c")

    @attrs.define
    class State:
        trail: list[str] = attrs.Factory(list)

    def step(self, name: str, ctx: durable.Context) -> Any:
        ctx.state.trail.append(name)
        return Next({"a": "b", "b": "c"}[name]) if name != "c" else Done(ctx.state.trail)


class Checkout(FSM):
    name = "th.Checkout"
    queue = "checkout"
    steps = ("start", "ship", "expired")

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Await("paid", then="ship", timeout=600, on_timeout="expired")
        if name == "ship":
            return Done({"paid": ctx.awaited[0].payload})
        return Fail("payment window closed")


class Napper(FSM):
    name = "th.Napper"
    steps = ("start", "wake")

    def step(self, name: str, ctx: durable.Context) -> Any:
        return Sleep(3600, then="wake") if name == "start" else Done("rested")


class Flaky(Job):
    name = "th.Flaky"
    backoff = Backoff(base=100, jitter=0)

    def perform(self, args: Any, ctx: durable.Context) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")
        return f"ok on attempt {ctx.attempt}"


class Square(Job):
    name = "th.Square"

    def perform(self, args: dict[str, int]) -> int:
        return args["n"] ** 2


class Fanout(FSM):
    name = "th.Fanout"
    steps = ("start", "join")

    def step(self, name: str, ctx: durable.Context) -> Any:
        if name == "start":
            return Spawn([Square.new(args={"n": n}) for n in (2, 3, 4)], then="join")
        return Done(sum(c.result for c in ctx.children))


class Forever(FSM):
    name = "th.Forever"
    steps = ("again",)

    def step(self, name: str, ctx: durable.Context) -> Any:
        return Next("again")


class Writer(Job):
    name = "th.Writer"

    def perform(self, args: dict[str, str], ctx: durable.Context) -> str:
        ctx.session.execute(text("INSERT INTO notes (body) VALUES (:b)"), {"b": args["body"]})
        return "written"


class OnlyInA(Job):
    name = "th.OnlyInA"
    queue = "a"

    def perform(self, args: Any) -> str:
        return "a"


class OnlyInB(Job):
    name = "th.OnlyInB"
    queue = "b"

    def perform(self, args: Any) -> str:
        return "b"


# -- drain ------------------------------------------------------------------------------------


def test_drain_runs_an_fsm_to_the_end_in_the_calling_thread(engine: Engine) -> None:
    iid = insert(engine, Pipeline)
    reports = drain(engine)
    assert [(r.instance_id, r.step, r.decision.kind) for r in reports] == [
        (iid, "a", "next"),
        (iid, "b", "next"),
        (iid, "c", "done"),
    ]
    assert all(r.committed for r in reports)
    done = snapshot(engine, iid)
    assert done.status == "done" and done.result == ["a", "b", "c"] and done.version == 3
    assert drain(engine) == []


def test_drain_parks_on_await_and_resumes_with_the_signal_pack(engine: Engine) -> None:
    iid = insert(engine, Checkout, correlation_key="order:1")
    assert [r.decision.kind for r in drain(engine)] == ["await"]
    assert snapshot(engine, iid).status == "awaiting"
    assert drain(engine) == []  # nothing runnable: the await waits
    send(engine, "order:1", "paid", {"amount": 5})
    assert [r.step for r in drain(engine)] == ["ship"]
    done = snapshot(engine, iid)
    assert done.result == {"paid": {"amount": 5}}
    assert done.signals[0].consumed_at is not None


def test_advance_fires_a_sleep_only_once_its_time_has_passed(engine: Engine) -> None:
    iid = insert(engine, Napper)
    drain(engine)
    assert snapshot(engine, iid).status == "scheduled"
    assert advance(engine, 1800) == 1
    assert drain(engine) == []  # half-way: still asleep
    assert snapshot(engine, iid).status == "scheduled"
    advance(engine, 1800)
    assert [r.step for r in drain(engine)] == ["wake"]
    assert snapshot(engine, iid).result == "rested"


def test_advance_makes_an_await_time_out(engine: Engine) -> None:
    iid = insert(engine, Checkout)
    drain(engine)
    advance(engine, 500)
    assert drain(engine) == []
    advance(engine, 100)
    reports = drain(engine)
    assert [r.step for r in reports] == ["expired"]
    failed = snapshot(engine, iid)
    assert failed.status == "failed" and failed.error["message"] == "payment window closed"


def test_a_failed_attempt_backs_off_until_time_is_advanced(engine: Engine) -> None:
    iid = insert(engine, Flaky)
    [first] = drain(engine)
    assert first.decision.kind == "retry" and first.decision.delay == 100
    backing_off = snapshot(engine, iid)
    assert backing_off.status == "scheduled" and backing_off.error["type"] == "RuntimeError"
    advance(engine, 50)
    assert drain(engine) == []
    advance(engine, 51)
    [second] = drain(engine)
    assert second.attempt == 2 and second.decision.kind == "done"
    assert snapshot(engine, iid).result == "ok on attempt 2"


def test_drain_runs_children_and_resumes_the_parent_with_their_results(engine: Engine) -> None:
    iid = insert(engine, Fanout)
    reports = drain(engine)
    assert [r.fsm for r in reports].count("th.Square") == 3
    assert reports[-1].instance_id == iid and reports[-1].step == "join"
    assert snapshot(engine, iid).result == 4 + 9 + 16


def test_writes_through_ctx_session_commit_with_the_step(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE notes (body text)"))
    iid = insert(engine, Writer, args={"body": "hello"})
    [report] = drain(engine)
    assert report.committed and snapshot(engine, iid).result == "written"
    assert scalar(engine, "SELECT body FROM notes") == "hello"


def test_drain_stops_a_runaway_fsm_at_max_steps(engine: Engine) -> None:
    insert(engine, Forever)
    with pytest.raises(StepLimitExceeded, match="max_steps=5") as caught:
        drain(engine, max_steps=5)
    assert "th.Forever.again" in str(caught.value)
    assert isinstance(caught.value, AssertionError)


def test_max_steps_that_suffice_do_not_raise(engine: Engine) -> None:
    insert(engine, Pipeline)
    assert len(drain(engine, max_steps=3)) == 3


def test_drain_can_be_limited_to_queues_and_classes(engine: Engine) -> None:
    a = insert(engine, OnlyInA)
    b = insert(engine, OnlyInB)
    assert [r.instance_id for r in drain(engine, queues=["b"])] == [b]
    assert snapshot(engine, a).status == "available"
    assert drain(engine, fsms=[OnlyInB]) == []
    assert [r.instance_id for r in drain(engine, fsms=["th.OnlyInA"])] == [a]
    with pytest.raises(ValidationError):
        drain(engine, queues="a")
    with pytest.raises(ValidationError):
        drain(engine, max_steps=0)


def test_drain_serialises_instances_that_share_a_concurrency_key(engine: Engine) -> None:
    first = insert(engine, Square, args={"n": 1}, concurrency_key="k", concurrency_limit=1)
    second = insert(engine, Square, args={"n": 2}, concurrency_key="k", concurrency_limit=1)
    reports = drain(engine)
    assert [r.instance_id for r in reports] == [first, second]
    assert snapshot(engine, second).status == "done"


def test_advance_rejects_bad_input_and_runs_in_the_callers_transaction(engine: Engine) -> None:
    iid = insert(engine, Napper)
    drain(engine)
    with pytest.raises(ValidationError):
        advance(engine, -1)
    with Session(engine) as s:
        assert advance(s, 3600) == 1
        s.rollback()  # the caller's transaction decides: nothing moved
    assert drain(engine) == []
    with Session(engine) as s, s.begin():
        advance(s, 3600)
    assert [r.instance_id for r in drain(engine)] == [iid]


# -- assertions ------------------------------------------------------------------------------


def test_assert_inserted_matches_fields_and_a_subset_of_the_state(session: Session) -> None:
    iid = durable.insert(session, Checkout, state={"order": 7, "lines": [1]}, correlation_key="o7")
    found = assert_inserted(session, Checkout, state={"order": 7}, queue="checkout")
    assert found.id == iid
    assert assert_inserted(session, "th.Checkout", correlation_key="o7").id == iid
    assert assert_inserted(session, Checkout).id == iid


def test_assert_inserted_explains_what_differs(session: Session) -> None:
    iid = durable.insert(session, Checkout, state={"order": 7}, correlation_key="o7")
    with pytest.raises(AssertionError) as caught:
        assert_inserted(session, Checkout, state={"order": 8}, correlation_key="o7")
    message = str(caught.value)
    assert "no th.Checkout instance matches state={'order': 8}" in message
    assert f"#{iid} (available at 'start') differs: state={{'order': 7}}" in message
    assert "correlation_key" not in message.split("differs:")[1]


def test_assert_inserted_names_the_classes_present_when_none_of_the_class(
    session: Session,
) -> None:
    durable.insert(session, Square, args={"n": 3})
    with pytest.raises(AssertionError, match=r"no th.Pipeline instance was inserted") as caught:
        assert_inserted(session, Pipeline)
    assert "th.Square x1" in str(caught.value)
    with pytest.raises(TypeError, match="cannot match on"):
        assert_inserted(session, Square, colour="red")


def test_assert_inserted_takes_typed_state_and_args(session: Session) -> None:
    durable.insert(session, Pipeline, state=Pipeline.State(trail=["x"]))
    durable.insert(session, Square, args={"n": 3})
    assert assert_inserted(session, Pipeline, state=Pipeline.State(trail=["x"])).fsm == (
        "th.Pipeline"
    )
    assert assert_inserted(session, Square, args={"n": 3}).state == {"n": 3}
    with pytest.raises(AssertionError):
        assert_inserted(session, Square, args={"n": 4})


def test_assert_signalled_finds_a_signal_and_explains_a_miss(session: Session) -> None:
    iid = durable.insert(session, Checkout, correlation_key="order:9")
    with pytest.raises(AssertionError, match="received no signal at all"):
        assert_signalled(session, iid, "paid")
    durable.signal(session, "order:9", "paid", {"amount": 10, "currency": "EUR"})
    found = assert_signalled(session, "order:9", "paid", {"amount": 10})
    assert found.payload == {"amount": 10, "currency": "EUR"}
    assert assert_signalled(session, iid, "paid").id == found.id
    with pytest.raises(AssertionError) as caught:
        assert_signalled(session, iid, "paid", payload={"amount": 11})
    message = str(caught.value)
    assert "received no signal 'paid' with payload {'amount': 11}" in message
    assert "'paid' (pending) payload={'amount': 10, 'currency': 'EUR'}" in message
    with pytest.raises(AssertionError, match="no instance has id 999999"):
        assert_signalled(session, 999999, "paid")


def test_assertions_accept_an_engine(engine: Engine) -> None:
    iid = insert(engine, Square, args={"n": 5})
    send(engine, iid, "poke", [1, 2])
    assert assert_inserted(engine, Square, args={"n": 5}).id == iid
    assert assert_signalled(engine, iid, "poke", [1, 2]).name == "poke"


# -- the pytest plugin -------------------------------------------------------------------------


def _run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_plugin_user.py").write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plugin_fixtures_are_registered_and_ask_for_durable_engine(tmp_path: Path) -> None:
    out = _run_pytest(
        tmp_path,
        """
        def test_needs_engine(durable_drain):
            pass

        def test_events_need_no_engine(durable_events):
            assert durable_events.events == []
        """,
    )
    assert "1 passed" in out.stdout and "1 error" in out.stdout, out.stdout + out.stderr
    assert "define one in your conftest.py" in out.stdout


def test_plugin_drain_and_advance_use_the_users_engine(tmp_path: Path, db_url: str) -> None:
    out = _run_pytest(
        tmp_path,
        f"""
        import pytest
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        import gen_durable as durable
        from gen_durable import FSM, Done, Sleep

        class Nap(FSM):
            steps = ("start", "wake")

            def step(self, name, ctx):
                return Sleep(60, then="wake") if name == "start" else Done("up")

        @pytest.fixture
        def durable_engine():
            engine = create_engine({db_url!r})
            yield engine
            engine.dispose()

        def test_nap(durable_engine, durable_drain, durable_advance, durable_events):
            with Session(durable_engine) as s, s.begin():
                iid = durable.insert(s, Nap)
            assert [r.step for r in durable_drain()] == ["start"]
            assert durable_advance(60) == 1
            assert [r.step for r in durable_drain()] == ["wake"]
            with Session(durable_engine) as s:
                assert durable.get(s, iid).result == "up"
            assert "step.stop" in durable_events.names()
        """,
    )
    assert "1 passed" in out.stdout, out.stdout + out.stderr


def test_the_testing_guide_shows_the_example_file_verbatim() -> None:
    from test_docs_examples import blocks

    example = (ROOT / "tests" / "examples" / "test_user_example.py").read_text()
    shown = [b.code for b in blocks(ROOT / "docs" / "testing.md") if b.is_python]
    assert example in shown, "docs/testing.md must show tests/examples/test_user_example.py"


def test_reset_deletes_every_row(engine: Engine) -> None:
    iid = insert(engine, Checkout)
    send(engine, iid, "paid")
    reset(engine)
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 0
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_signals") == 0
    assert drain(engine) == []
