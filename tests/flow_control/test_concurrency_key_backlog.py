"""Concurrency keys without head-of-line delay: a long backlog on one key at its limit does
not hold up instances on other keys queued behind it.

Counts claims, never times: the real claim path (``store.claims.claim``) is called by
hand with as many free slots as a small runner would have.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from _support.dbutil import DatabaseFactory
from _support.helpers import scalar, snapshot, transition_for, wait_until
from _support.sqlwatch import explain_each, indexes, seq_scans
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, Job, Runner, store

FSMS = ["hol.Keyed"]


class Keyed(FSM):
    name = "hol.Keyed"
    steps = ("go",)

    def go(self, ctx: durable.Context) -> Done:
        return Done()


def _claim(engine: Engine, limit: int) -> list[Any]:
    with engine.begin() as conn:
        return store.claims.claim(conn, "default", FSMS, limit, "n", 30, None)


def _insert(engine: Engine, specs: list[Any]) -> list[int]:
    with Session(engine) as s, s.begin():
        return durable.insert_all(s, specs)


def _statuses(engine: Engine, key: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, count(*) AS n FROM gen_durable.gd_instances "
                "WHERE concurrency_key = :key GROUP BY status"
            ),
            {"key": key},
        ).all()
    return {r.status: r.n for r in rows}


def test_instances_on_free_keys_are_claimed_at_once_behind_a_backlog_on_a_full_key(
    engine: Engine,
) -> None:
    """The scenario of the report: a backlog on one key (limit 1) inserted first, then one
    instance on each of a few other keys. Before, every claim spent its slots on the
    backlog's front (blocking those rows only), so the other keys waited for the claims to
    work through the whole backlog (here 20 claims)."""
    hot = _insert(engine, [Keyed.new(concurrency_key="hot") for _ in range(100)])
    free = _insert(engine, [Keyed.new(concurrency_key=f"free:{i}") for i in range(4)])
    first = _claim(engine, 5)
    assert [r.id for r in first] == [hot[0], *free]
    # The rest of the backlog left the picker's index, in that same claim.
    assert _statuses(engine, "hot") == {"running": 1, "blocked": 99}
    assert _claim(engine, 5) == []


def test_the_reported_case_needs_as_many_claims_as_the_free_keys_fill(engine: Engine) -> None:
    """1,000 on one key (limit 1), then 20 on 20 other keys, claimed 10 at a time (a
    runner of concurrency 10): the 20 (and the key's first) take three claims. Before,
    the 20 came after about 100 claims (10 of the key's rows blocked per claim)."""
    _insert(engine, [Keyed.new(concurrency_key="hot") for _ in range(1000)])
    free = _insert(engine, [Keyed.new(concurrency_key=f"free:{i}") for i in range(20)])
    claimed: list[int] = []
    for _ in range(3):
        claimed += [r.id for r in _claim(engine, 10)]
    assert set(free) <= set(claimed)
    assert _statuses(engine, "hot") == {"running": 1, "blocked": 999}


def test_the_key_runs_its_backlog_in_order_one_at_a_time(engine: Engine) -> None:
    hot = _insert(engine, [Keyed.new(concurrency_key="hot") for _ in range(30)])
    seen: list[int] = []
    for _ in range(30):
        [row] = _claim(engine, 10)  # never more than the key's limit
        seen.append(row.id)
        with engine.begin() as conn:  # its commit makes the next oldest available
            store.transitions.commit(conn, [transition_for(row, step="go")], None)
    assert seen == hot
    assert _claim(engine, 10) == []


def test_rows_that_allow_more_than_what_runs_stay_available(engine: Engine) -> None:
    """A limit is per instance: the rows of a full key blocked in bulk are those whose
    own limit is reached, not the key's other rows."""
    a, b, c = _insert(
        engine,
        [
            Keyed.new(concurrency_key="k"),
            Keyed.new(concurrency_key="k"),
            Keyed.new(concurrency_key="k", concurrency_limit=2),
        ],
    )
    assert [r.id for r in _claim(engine, 1)] == [a]
    # b is blocked (one runs, its limit is 1) and c, which allows two, is claimed with it.
    assert [r.id for r in _claim(engine, 1)] == [c]
    assert snapshot(engine, b).status == "blocked"


def test_bulk_blocking_keeps_to_the_claims_queue_and_classes(engine: Engine) -> None:
    """Rows a runner of this queue could not run are left alone: blocked, a released one
    would take the key's freed slot and sit there."""
    _insert(engine, [Keyed.new(concurrency_key="k") for _ in range(3)])
    elsewhere = _insert(engine, [Keyed.new(concurrency_key="k", queue="other")])
    assert len(_claim(engine, 1)) == 1
    assert _claim(engine, 1) == []
    assert _statuses(engine, "k") == {"running": 1, "blocked": 2, "available": 1}
    assert snapshot(engine, elsewhere[0]).status == "available"


def test_bulk_blocking_skips_rows_locked_elsewhere_and_never_waits(engine: Engine) -> None:
    """A caller's transaction may hold a row lock (a signal, a cancel) for as long as it
    likes: the claim skips that row and carries on."""
    hot = _insert(engine, [Keyed.new(concurrency_key="hot") for _ in range(10)])
    [first] = _claim(engine, 1)
    with engine.connect() as other:
        tx = other.begin()
        other.execute(
            text("SELECT 1 FROM gen_durable.gd_instances WHERE id = :id FOR UPDATE"),
            {"id": hot[5]},
        )
        with engine.connect() as conn, conn.begin():
            conn.execute(text("SET LOCAL lock_timeout = '5s'"))
            taken = store.claims.claim(conn, "default", FSMS, 3, "n", 30, None)
        tx.commit()
    assert taken == []
    assert snapshot(engine, hot[5]).status == "available"
    assert _statuses(engine, "hot") == {"running": 1, "blocked": 8, "available": 1}
    assert first.id == hot[0]


def test_a_release_never_waits_for_a_transaction_that_inserts_on_the_key(engine: Engine) -> None:
    """Inserting takes no lock that releasing a key waits for: a caller's open transaction
    that inserted on a key never holds up the commit that frees the key."""
    first, second = _insert(engine, [Keyed.new(concurrency_key="k") for _ in range(2)])
    [holder] = _claim(engine, 1)
    assert _claim(engine, 1) == []  # second is blocked
    with Session(engine) as open_tx, open_tx.begin():
        durable.insert(open_tx, Keyed, concurrency_key="k")  # not committed yet
        done = threading.Event()

        def finish() -> None:
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                store.transitions.commit(conn, [transition_for(holder, step="go")], None)
            done.set()

        t = threading.Thread(target=finish)
        t.start()
        t.join(10)
        assert done.is_set()
        assert snapshot(engine, second).status == "available"
    assert holder.id == first


# -- plan --------------------------------------------------------------------------------------

BACKLOG = 20_000
HOT = 5_000


@pytest.fixture(scope="module")
def backlog(db_factory: DatabaseFactory) -> Iterator[Engine]:
    """A backlog of unkeyed runnable rows behind a long one on one key, analysed."""
    name = db_factory.new_name()
    eng = create_engine(db_factory.create(name, template=db_factory.template), pool_size=2)
    try:
        _insert(eng, [Keyed.new(concurrency_key="hot") for _ in range(HOT)])
        _insert(eng, [Keyed.new() for _ in range(BACKLOG)])
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE gen_durable.gd_instances")
        yield eng
    finally:
        eng.dispose()
        db_factory.drop(name)


@pytest.mark.parametrize("prepared", [False, True])
def test_blocking_a_full_keys_rows_walks_the_keys_index(backlog: Engine, prepared: bool) -> None:
    """The bulk block reads the full key's rows from its own index (a Seq Scan, or a walk
    of the picker's index, would read the whole queue's backlog), plain or prepared."""
    with backlog.connect() as conn, conn.begin() as tx:
        store.claims.claim(conn, "default", FSMS, 1, "n", 30, None)  # "hot" is now full
        found = explain_each(
            conn,
            lambda: store.claims.claim(conn, "default", FSMS, 10, "n", 30, None),
            lambda sql: "blocked" in sql and "gd_instances" in sql,
            prepared=prepared,
        )
        blocked = conn.execute(
            text("SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'blocked'")
        ).scalar_one()
        tx.rollback()
    assert found, "no statement blocked rows"
    used = set().union(*(indexes(plan) for _, plan in found))
    assert "ix_gd_instances_key_available" in used, used
    assert not any(seq_scans(plan, "gd_instances") for _, plan in found)
    # The candidates and the next rows of the key, twice: the slots they left were
    # offered once more, to the next rows of the key. The rest waits for later claims.
    assert blocked == 2 * store.concurrency.BLOCK_AHEAD


# -- runners -----------------------------------------------------------------------------------


class Busy(Job):
    """Counts how many steps of each key run at the same moment."""

    name = "hol.Busy"
    lock = threading.Lock()
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    @attrs.define
    class Args:
        key: str

    @staticmethod
    def concurrency_key(args: Any) -> str:
        return args.key

    def perform(self, args: Any) -> None:
        cls = type(self)
        with cls.lock:
            cls.active[args.key] += 1
            cls.peak[args.key] = max(cls.peak[args.key], cls.active[args.key])
        try:
            time.sleep(0.01)
        finally:
            with cls.lock:
                cls.active[args.key] -= 1


def test_runners_side_by_side_keep_the_limit_and_strand_nothing(engine: Engine) -> None:
    """Two runners claim a backlog on one key (limit 2) mixed with other keys: bulk
    blocking never lets more than the limit run, and every blocked row runs in the end
    without the reaper's safety net (its interval is longer than the test)."""
    Busy.peak.clear()
    specs = [Busy.new(args={"key": "hot"}, concurrency_limit=2) for _ in range(60)]
    specs += [Busy.new(args={"key": f"k{i % 7}"}) for i in range(40)]
    _insert(engine, specs)
    fast = {"lease": 10.0, "poll_interval": 0.1, "grace": 2.0, "reaper_interval": 120.0}
    with (
        Runner(engine, queues={"default": 4}, **fast),
        Runner(engine, queues={"default": 4}, **fast),
    ):
        wait_until(
            lambda: (
                scalar(
                    engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'"
                )
                == 100
            ),
            timeout=60,
        )
    assert Busy.peak["hot"] == 2
    assert max(n for k, n in Busy.peak.items() if k != "hot") == 1
