"""The operator audit (gd_audit): each action writes its row in its own transaction.

Retry, cancel, pause and resume are always recorded (``actor`` None when not given); a
signal only when sent with an ``actor``. An action that fails, or that changed nothing,
or whose transaction rolls back, leaves no row.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection

import gen_durable as durable
from gen_durable import FSM, Await, Done, store
from gen_durable.errors import InvalidTransition, NotFound, ValidationError


class Parked(FSM):
    name = "audit.Parked"
    steps = ("wait", "go")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("go", then="go")

    def go(self, ctx: durable.Context) -> Done:
        return Done()


def audit(conn: Connection) -> list[tuple[Any, ...]]:
    """(action, target, instance_id, actor, details), oldest first."""
    rows = store.audit.listing(conn, limit=100)
    return [(r.action, r.target, r.instance_id, r.actor, r.details) for r in reversed(rows)]


def test_each_operator_action_is_recorded_with_its_actor(conn: Connection) -> None:
    iid = durable.insert(conn, Parked, correlation_key="p-1")
    durable.signal(conn, "p-1", "noise")  # an application's signal: not audited
    sent = durable.signal(conn, iid, "go", {"x": 1}, actor="ops@host")
    assert durable.cancel(conn, "p-1", "no longer needed", actor="ops@host")
    assert durable.retry(conn, iid) == iid
    durable.pause_queue(conn, "default", actor="ops@host")
    durable.resume_queue(conn, "default")
    assert audit(conn) == [
        (
            "signal",
            str(iid),
            iid,
            "ops@host",
            {"name": "go", "signal_id": sent.signal_id, "duplicate": False},
        ),
        ("cancel", "p-1", iid, "ops@host", {"reason": "no longer needed", "descendants": 0}),
        ("retry", str(iid), iid, None, None),
        ("pause", "default", None, "ops@host", None),
        ("resume", "default", None, None, None),
    ]
    # Filters: by the instance (its id, or the key as given), by action, by actor.
    assert [r.action for r in store.audit.listing(conn, target=str(iid))] == [
        "retry",
        "cancel",
        "signal",
    ]
    assert [r.action for r in store.audit.listing(conn, target="p-1")] == ["cancel"]
    assert [r.target for r in store.audit.listing(conn, action="pause")] == ["default"]
    assert len(store.audit.listing(conn, actor="ops@host")) == 3
    newest = store.audit.listing(conn, limit=2)
    assert [r.action for r in store.audit.listing(conn, before_id=newest[-1].id)] == [
        "retry",
        "cancel",
        "signal",
    ]


def test_an_action_rolled_back_leaves_no_audit_row(conn: Connection) -> None:
    iid = durable.insert(conn, Parked)
    with conn.begin_nested() as savepoint:
        assert durable.cancel(conn, iid, actor="ops")
        assert len(audit(conn)) == 1
        savepoint.rollback()
    assert audit(conn) == []
    assert durable.get(conn, iid).status == "available"


def test_an_action_that_fails_or_changes_nothing_leaves_no_audit_row(conn: Connection) -> None:
    iid = durable.insert(conn, Parked)
    with pytest.raises(InvalidTransition):
        durable.retry(conn, iid, actor="ops")  # it has not failed
    with pytest.raises(NotFound):
        durable.cancel(conn, 987654321, actor="ops")
    with pytest.raises(NotFound):
        durable.signal(conn, "no-such-key", "go", actor="ops")
    with pytest.raises(ValidationError, match="actor"):
        durable.pause_queue(conn, "default", actor="")
    assert audit(conn) == []
    assert durable.cancel(conn, iid, actor="ops")
    assert not durable.cancel(conn, iid, actor="ops")  # already finished: nothing happened
    assert [row[0] for row in audit(conn)] == ["cancel"]
    assert store.queues.settings(conn) == []  # the refused pause wrote nothing either


def test_a_prune_total_is_kept_up_to_date_in_its_row(conn: Connection) -> None:
    audit_id = store.audit.record(conn, "prune", actor="ops", details={"deleted": 0})
    store.audit.add_count(conn, audit_id, "deleted", 1000)
    store.audit.add_count(conn, audit_id, "deleted", 7)
    store.audit.add_count(conn, audit_id, "batches", 2)
    assert audit(conn) == [("prune", None, None, "ops", {"deleted": 1007, "batches": 2})]
