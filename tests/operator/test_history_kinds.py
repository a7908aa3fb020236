"""The history's rows for transitions no step made: a timer that fired (``timeout``), the
reaper failing an instance whose last lease lapsed (``lease_expired``) and a cancel from
outside (``outside_cancel``); and the graph drawing them apart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Done, Next, Sleep, store
from gen_durable.client.graph import GraphEdge, edges, fsm_graph
from gen_durable.runtime.maintenance.reaper import Reaper
from gen_durable.runtime.maintenance.scheduler import Scheduler
from gen_durable.testing import drain
from gen_durable.web import create_app
from gen_durable.web.diagram import layout

HOUR = 3600.0


class _Asker:
    """ask awaits an answer (or sleeps, by its state); a timeout goes on at ``late``."""

    steps = ("ask", "answer", "late")

    def ask(self, ctx: durable.Context) -> Await | Sleep:
        how = ctx.state["how"]
        if how == "sleep":
            return Sleep(HOUR, then="answer")
        if how == "forever":
            return Await("reply", then="answer")
        return Await("reply", then="answer", timeout=HOUR, on_timeout=ctx.state.get("late"))

    def answer(self, ctx: durable.Context) -> Done:
        return Done()

    def late(self, ctx: durable.Context) -> Next:
        return Next("answer")


class Kept(_Asker, FSM):
    name = "history_kinds.Kept"
    history = "all"


class Plain(_Asker, FSM):
    """No ``history`` option: the Runner's default decides."""

    name = "history_kinds.Plain"


class Quiet(_Asker, FSM):
    name = "history_kinds.Quiet"
    history = "none"


class Errors(_Asker, FSM):
    name = "history_kinds.Errors"
    history = "errors"


def start(engine: Engine, *specs: tuple[type[FSM], dict[str, Any]]) -> list[int]:
    """Insert one instance per (class, state) and run each up to its Await or Sleep."""
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [cls.new(state=state) for cls, state in specs])
    drain(engine)
    return ids


def make_due(engine: Engine, ids: list[int]) -> None:
    """Their timers are past (the hour is not waited for)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET run_at = now() - interval '1 second' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )


def rows_of(engine: Engine, iid: int) -> list[tuple[Any, ...]]:
    """(version, attempt, from, to, kind, status, error) of each history row, in order."""
    with engine.connect() as conn:
        return [
            (r.version, r.attempt, r.from_step, r.to_step, r.kind, r.status, r.error)
            for r in store.history.of_instance(conn, iid, 100)
        ]


def instance(engine: Engine, iid: int) -> tuple[str, str]:
    with Session(engine) as s:
        snap = durable.get(s, iid)
    return snap.status.value, snap.step


AWAITED = (0, 1, "ask", "answer", "await", "awaiting", None)


def test_one_timer_pass_records_the_timeouts_of_the_classes_that_keep_them(
    engine: Engine,
) -> None:
    kept_late, kept_then, kept_later, kept_forever, kept_sleep, plain, quiet, errors = start(
        engine,
        (Kept, {"how": "timeout", "late": "late"}),
        (Kept, {"how": "timeout"}),  # no on_timeout: resumes at its then step
        (Kept, {"how": "timeout", "late": "late"}),  # not due
        (Kept, {"how": "forever"}),  # no timeout at all
        (Kept, {"how": "sleep"}),  # a Sleep that is due: not a timeout
        (Plain, {"how": "timeout", "late": "late"}),
        (Quiet, {"how": "timeout", "late": "late"}),
        (Errors, {"how": "timeout", "late": "late"}),
    )
    make_due(engine, [kept_late, kept_then, kept_sleep, plain, quiet, errors])
    woken: list[str] = []
    scheduler = Scheduler(engine, woken.extend, 1.0, history="all")
    assert scheduler.run_once() is False
    assert sorted(woken) == ["default"] * 6

    timed_out = (1, 0, "ask", "late", "timeout", "available", None)
    assert rows_of(engine, kept_late) == [AWAITED, timed_out]
    assert rows_of(engine, kept_then) == [AWAITED, (1, 0, "ask", "answer", *timed_out[4:])]
    assert rows_of(engine, kept_later) == rows_of(engine, kept_forever) == [AWAITED]
    assert rows_of(engine, kept_sleep) == [(0, 1, "ask", "answer", "sleep", "scheduled", None)]
    # The Runner's default ("all") keeps Plain's timeout; its Await was committed with no
    # history (drain's default), so the row names the step it would have resumed at.
    assert rows_of(engine, plain) == [(1, 0, "answer", "late", *timed_out[4:])]
    assert rows_of(engine, quiet) == rows_of(engine, errors) == []
    for iid in (kept_late, plain, quiet, errors):
        assert instance(engine, iid) == ("available", "late")
    assert instance(engine, kept_then) == instance(engine, kept_sleep) == ("available", "answer")
    assert instance(engine, kept_later) == instance(engine, kept_forever) == ("awaiting", "answer")

    # By default (history "none") a class without its own option keeps nothing.
    (plain_off,) = start(engine, (Plain, {"how": "timeout"}))
    make_due(engine, [plain_off])
    Scheduler(engine, woken.extend, 1.0).run_once()
    assert instance(engine, plain_off) == ("available", "answer")
    assert rows_of(engine, plain_off) == []


def claim_and_lapse(engine: Engine, fsm: str) -> None:
    """Claim the instance of ``fsm`` that is runnable, and let its lease lapse."""
    with engine.begin() as conn:
        (row,) = store.claims.claim(conn, "default", [fsm], 1, "lost-node", 30, None)
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET lease_expires_at = now() - interval '1s' "
                "WHERE id = :id"
            ),
            {"id": row.id},
        )


class Fragile(FSM):
    name = "history_kinds.Fragile"
    steps = ("work",)
    history = "errors"
    max_attempts = 2

    def work(self, ctx: durable.Context) -> Done:
        return Done()


def test_drain_records_a_timeout_as_a_runners_scheduler_does(engine: Engine) -> None:
    """Regression: drain staged due timers without their history rows, so a test of a
    class that keeps its history saw no ``timeout`` row where a Runner writes one."""
    kept, plain = start(
        engine, (Kept, {"how": "timeout", "late": "late"}), (Plain, {"how": "timeout"})
    )
    make_due(engine, [kept, plain])
    drain(engine)
    timed_out = (1, 0, "ask", "late", "timeout", "available", None)
    assert rows_of(engine, kept)[:2] == [AWAITED, timed_out]
    assert instance(engine, kept) == ("done", "answer")
    # drain's default history, as for its steps: none for a class without the option
    assert rows_of(engine, plain) == []
    assert instance(engine, plain) == ("done", "answer")


def test_the_reaper_records_the_failure_of_a_last_lost_lease_not_an_earlier_one(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Fragile)
        kept_nothing = durable.insert(s, Quiet, state={"how": "forever"}, queue="q")
    reaper = Reaper(engine, lambda queues: None, 1.0, node_ttl=60.0)
    claim_and_lapse(engine, Fragile.name)
    reaper.run_once()
    assert rows_of(engine, iid) == []  # attempt 1 of 2: a re-run, in gd_reruns only
    claim_and_lapse(engine, Fragile.name)
    reaper.run_once()
    message = "LeaseExpired: the worker running step work lost its lease (attempt 2 of 2)"
    assert rows_of(engine, iid) == [(0, 2, "work", None, "lease_expired", "failed", message)]
    with engine.connect() as conn:
        assert [r.reason for r in store.history.reruns_of(conn, iid, 10)] == ["lease_expired"] * 2
    with engine.begin() as conn:  # a class that keeps no history: failed, no row
        conn.execute(
            text("UPDATE gen_durable.gd_instances SET max_attempts = 1 WHERE id = :id"),
            {"id": kept_nothing},
        )
        (row,) = store.claims.claim(conn, "q", [Quiet.name], 1, "lost-node", 30, None)
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET lease_expires_at = now() - interval '1s' "
                "WHERE id = :id"
            ),
            {"id": row.id},
        )
    reaper.run_once()
    assert instance(engine, kept_nothing)[0] == "failed"
    assert rows_of(engine, kept_nothing) == []


def test_a_cancel_from_outside_is_recorded_for_the_classes_that_keep_every_transition(
    engine: Engine,
) -> None:
    kept, quiet, plain_unknown, plain_seen = start(
        engine,
        (Kept, {"how": "forever"}),
        (Quiet, {"how": "forever"}),
        (Plain, {"how": "forever"}),
        (Plain, {"how": "timeout"}),
    )
    make_due(engine, [plain_seen])  # its timeout row shows its runners keep everything
    Scheduler(engine, lambda queues: None, 1.0, history="all").run_once()
    with Session(engine) as s, s.begin():
        for iid in (kept, quiet, plain_unknown, plain_seen):
            assert durable.cancel(s, iid, reason="not needed", actor="ops@host")
    cancelled = ("outside_cancel", "cancelled", "Cancel: not needed")
    assert rows_of(engine, kept) == [AWAITED, (1, 0, "answer", None, *cancelled)]
    assert rows_of(engine, quiet) == rows_of(engine, plain_unknown) == []
    assert rows_of(engine, plain_seen)[-1] == (1, 0, "answer", None, *cancelled)
    with Session(engine) as s, s.begin():
        assert durable.cancel(s, kept) is False  # finished already: nothing more
    assert len(rows_of(engine, kept)) == 2
    with engine.connect() as conn:  # the actor is in the audit table
        actors = conn.execute(
            text("SELECT actor FROM gen_durable.gd_audit WHERE instance_id = :id"), {"id": kept}
        ).scalars()
        assert list(actors) == ["ops@host"]


def test_graph_draws_timeouts_apart(engine: Engine, db_url: str) -> None:
    first, second, answered = start(
        engine,
        (Kept, {"how": "timeout", "late": "late"}),
        (Kept, {"how": "timeout", "late": "late"}),
        (Kept, {"how": "timeout", "late": "late"}),
    )
    with Session(engine) as s, s.begin():
        durable.signal(s, answered, "reply", {})
    make_due(engine, [first, second])
    drain(engine)
    with Session(engine) as s:
        found = edges(s, Kept.name)
        graph = fsm_graph(s, Kept.name)
    assert GraphEdge("ask", "late", "timeout", 2) in found
    assert GraphEdge("ask", "answer", "await", 3) in found
    assert [e.outside for e in found if e.kind == "timeout"] == [True]
    assert not any(e.outside for e in found if e.kind != "timeout")
    drawn = layout(graph)
    dashed = [line.label for line in drawn.lines if line.outside]
    assert dashed == ["timeout 2"]
    page = create_app(engine).test_client().get(f"/fsm/{Kept.name}")
    assert page.status_code == 200
    assert page.get_data(as_text=True).count('class="edge outside"') == 1

    env = {**os.environ, "GEN_DURABLE_DSN": db_url}
    cli = [sys.executable, "-m", "gen_durable", "graph", Kept.name]
    shown = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "    ask --> late: timeout (2)" in shown.stdout.splitlines()
    as_json = subprocess.run([*cli, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    timeout = {"from": "ask", "to": "late", "kind": "timeout", "count": 2}
    assert timeout in json.loads(as_json.stdout)["edges"]
