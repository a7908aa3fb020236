"""Bulk cancel and retry (gen_durable.client.bulk) against real PostgreSQL: what a filter
matches among interleaved rows, the bound fixed at preview, batches committed one by one,
and a resume after an interrupted batch."""

from __future__ import annotations

from typing import Any

import pytest
from procs.cli_app import Gate, Greet
from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import store
from gen_durable.client.bulk import BulkFilter, bulk_preview, bulk_start, bulk_step
from gen_durable.errors import NotFound, ValidationError


def fail(bind: Connection | Session, ids: list[int]) -> None:
    """Make ``ids`` failed, as a step that used its last attempt leaves them."""
    bind.execute(
        text(
            "UPDATE gen_durable.gd_instances SET status = 'failed', finished_at = now(), "
            'error = \'{"type": "RuntimeError"}\' WHERE id = ANY(:ids)'
        ),
        {"ids": ids},
    )


def statuses(bind: Connection | Session, ids: list[int]) -> dict[int, str]:
    rows = bind.execute(
        text("SELECT id, status FROM gen_durable.gd_instances WHERE id = ANY(:ids)"), {"ids": ids}
    )
    return {r.id: r.status for r in rows}


def audited(bind: Connection | Session, instance_id: int) -> list[str]:
    conn = bind.connection() if isinstance(bind, Session) else bind
    return [r.action for r in store.audit.listing(conn, target=str(instance_id))]


def test_a_bulk_retry_takes_only_matching_rows_under_the_bound_in_batches(
    session: Session,
) -> None:
    # Interleaved: failed Greets in two queues, failed Gates, a Greet still waiting.
    rows: dict[str, list[int]] = {"target": [], "other_queue": [], "other_class": [], "live": []}
    for n in range(7):
        rows["target"].append(durable.insert(session, Greet, args={"who": str(n)}))
        rows["other_queue"].append(durable.insert(session, Greet, args={}, queue="other"))
        rows["other_class"].append(durable.insert(session, Gate))
        rows["live"].append(durable.insert(session, Greet, args={}))
    failed = rows["target"] + rows["other_queue"] + rows["other_class"]
    fail(session, failed)
    where = BulkFilter(class_name=Greet.name, status="failed", queue="default")
    preview = bulk_preview(session, "retry", where, sample=3)
    assert preview.count == 7 and preview.bound == rows["target"][-1]
    assert preview.sample == rows["target"][:3]
    # Inserted after the preview: matches the filter but lies beyond the bound.
    late = durable.insert(session, Greet, args={"who": "late"})
    fail(session, [late])
    action = bulk_start(session, "retry", where, bound=preview.bound, expected=7, actor="ops")
    batches = []
    after = 0
    while True:
        step = bulk_step(session, action, after=after, batch=3)
        batches.append(step.ids)
        after = step.last_id
        if step.done:
            break
    assert [len(b) for b in batches] == [3, 3, 1] and step.total == 7
    assert [i for b in batches for i in b] == rows["target"]
    now = statuses(session, [*failed, *rows["live"], late])
    assert {now[i] for i in rows["target"]} == {"available"}
    assert {now[i] for i in rows["other_queue"] + rows["other_class"] + [late]} == {"failed"}
    assert {now[i] for i in rows["live"]} == {"available"}
    assert all(audited(session, i) == ["retry"] for i in rows["target"])
    assert audited(session, late) == []
    [record] = store.audit.listing(session.connection(), action="bulk_retry")
    assert record.actor == "ops"
    assert record.details["done"] == 7 and record.details["skipped"] == 0
    assert record.details["expected"] == 7 and record.details["bound"] == preview.bound
    assert record.details["filter"] == {
        "class_name": Greet.name,
        "status": "failed",
        "queue": "default",
    }
    assert record.details["finished"] is True


def test_a_bulk_cancel_matches_a_key_prefix_literally_and_leaves_what_finished_meanwhile(
    session: Session,
) -> None:
    under = [durable.insert(session, Gate, correlation_key=f"a_%:{n}") for n in range(3)]
    lookalike = durable.insert(session, Gate, correlation_key="ab%:0")  # `_` is not a wildcard
    done_meanwhile = under[1]
    where = BulkFilter(correlation_key_prefix="a_%")
    preview = bulk_preview(session, "cancel", where)
    assert preview.count == 3 and preview.sample == under
    durable.cancel(session, done_meanwhile)  # finished before the action ran
    action = bulk_start(
        session, "cancel", where, bound=preview.bound, expected=3, actor=None, reason="bad deploy"
    )
    step = bulk_step(session, action)
    assert step.done and step.ids == [under[0], under[2]] and step.total == 2
    assert statuses(session, [*under, lookalike])[lookalike] == "available"
    assert durable.get(session, under[0]).error == {"type": "Cancel", "message": "bad deploy"}
    assert audited(session, done_meanwhile) == ["cancel"]  # only its own, earlier cancel


def test_an_interrupted_bulk_action_resumes_after_its_last_committed_batch(
    engine: Engine,
) -> None:
    with Session(engine) as s, s.begin():
        ids = durable.insert_all(s, [Greet.new(args={"who": str(n)}) for n in range(5)])
    where = BulkFilter(class_name=Greet.name)
    with engine.begin() as conn:
        preview = bulk_preview(conn, "cancel", where)
        action = bulk_start(conn, "cancel", where, bound=preview.bound, expected=5, actor="ops")
    with engine.begin() as conn:
        assert bulk_step(conn, action, batch=2).ids == ids[:2]
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert bulk_step(conn, action, batch=2).ids == ids[2:4]
        raise RuntimeError("the operator's terminal closed")  # this batch rolls back
    with engine.connect() as conn:
        assert set(statuses(conn, ids[2:]).values()) == {"available"}
    steps = []
    with engine.begin() as conn:  # after=None: where the last committed batch ended
        steps.append(bulk_step(conn, action, batch=2))
    with engine.begin() as conn:
        steps.append(bulk_step(conn, action, batch=2))
    assert [s.ids for s in steps] == [ids[2:4], ids[4:]]
    assert steps[-1].done and steps[-1].total == 5
    with engine.connect() as conn:
        assert set(statuses(conn, ids).values()) == {"cancelled"}
        assert all(audited(conn, i) == ["cancel"] for i in ids)
        [record] = store.audit.listing(conn, action="bulk_cancel")
    assert record.details["done"] == 5 and record.details["last_id"] == ids[-1]


@pytest.mark.parametrize(
    "fields",
    [
        {"status": "nope"},
        {"class_name": ""},
        {"queue": 3},
        {"step": "a\x00b"},
        {"older_than": -5},
        {"older_than": float("nan")},
        {"older_than": True},
        {"correlation_key_prefix": ""},
    ],
)
def test_a_bad_filter_is_a_validation_error(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BulkFilter(**fields)


def test_bad_bulk_arguments_are_validation_errors_and_write_nothing(conn: Connection) -> None:
    where = BulkFilter()
    with pytest.raises(ValidationError, match="'cancel' or 'retry'"):
        bulk_preview(conn, "delete", where)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="matches none"):
        bulk_preview(conn, "retry", BulkFilter(status="running"))
    with pytest.raises(ValidationError, match="matches none"):
        bulk_start(conn, "cancel", BulkFilter(status="done"), bound=1, expected=1, actor=None)
    with pytest.raises(ValidationError, match="BulkFilter"):
        bulk_preview(conn, "cancel", {"status": "failed"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="sample"):
        bulk_preview(conn, "cancel", where, sample=-1)
    with pytest.raises(ValidationError, match="bound"):
        bulk_start(conn, "cancel", where, bound=-1, expected=0, actor=None)
    assert store.audit.listing(conn) == []
    audit = store.audit.record(conn, "pause", target="default")
    with pytest.raises(NotFound):
        bulk_step(conn, audit)
    with pytest.raises(ValidationError, match="batch"):
        bulk_step(conn, audit, batch=0)


def test_older_than_counts_from_the_last_change(conn: Connection) -> None:
    old, new = durable.insert(conn, Gate), durable.insert(conn, Gate)
    conn.execute(
        text(
            "UPDATE gen_durable.gd_instances SET updated_at = now() - interval '1 hour' "
            "WHERE id = :id"
        ),
        {"id": old},
    )
    found = bulk_preview(conn, "cancel", BulkFilter(class_name=Gate.name, older_than=600))
    assert (found.count, found.sample) == (1, [old])
    assert new not in found.sample
