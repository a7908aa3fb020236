"""The fleet views (gen_durable.client.fleet): runners with their leases, leadership and
staleness judged against their own heartbeat interval; queues with their depth."""

from __future__ import annotations

from procs.cli_app import Gate, Greet
from sqlalchemy import Connection, Engine, text

import gen_durable as durable
from gen_durable import Runner, store
from gen_durable.client.fleet import queues, workers


def register(conn: Connection, node_id: str, queues: dict[str, int], beat: float | None) -> None:
    store.maintenance.upsert_node(
        conn, node_id, "host-a", 7, queues, [Greet.name], None, heartbeat_interval=beat
    )


def silence(conn: Connection, node_id: str, seconds: int) -> None:
    conn.execute(
        text(
            "UPDATE gen_durable.gd_nodes SET heartbeat_at = now() - make_interval(secs => :s) "
            "WHERE id = :id"
        ),
        {"s": seconds, "id": node_id},
    )


def hold(conn: Connection, ids: list[int], owner: str) -> None:
    conn.execute(
        text(
            "UPDATE gen_durable.gd_instances SET status = 'running', lease_owner = :owner, "
            "lease_expires_at = now() + interval '30 s', lease_token = gen_random_uuid() "
            "WHERE id = ANY(:ids)"
        ),
        {"owner": owner, "ids": ids},
    )


def test_workers_mark_stale_runners_by_their_own_interval_and_show_what_they_hold(
    conn: Connection,
) -> None:
    register(conn, "fast", {"default": 4}, beat=1.0)  # silent 5 s: missed 3 beats
    register(conn, "slow", {"default": 2, "mail": 1}, beat=10.0)  # silent 5 s: fine
    register(conn, "old", {"mail": 1}, beat=None)  # no interval recorded: 60 s
    silence(conn, "fast", 5)
    silence(conn, "slow", 5)
    silence(conn, "old", 30)
    ids = [durable.insert(conn, Greet, args={}) for _ in range(3)]
    hold(conn, ids[:2], "slow")
    hold(conn, ids[2:], "fast")
    conn.execute(
        text(
            "INSERT INTO gen_durable.gd_leaders (name, owner, expires_at) "
            "VALUES ('leader', 'slow', now() + interval '10 s')"
        )
    )
    seen = {w.id: w for w in workers(conn)}
    assert {i: (w.stale, w.running, w.leader) for i, w in seen.items()} == {
        "fast": (True, 1, False),
        "slow": (False, 2, True),
        "old": (False, 0, False),
    }
    assert seen["slow"].queues == {"default": 2, "mail": 1}
    assert seen["slow"].heartbeat_interval == 10.0 and seen["old"].heartbeat_interval is None
    assert 4 < seen["fast"].silent_for < 60
    assert [w.id for w in workers(conn, stale_after_seconds=20)] == ["fast", "old", "slow"]
    assert [w.stale for w in workers(conn, stale_after_seconds=20)] == [False, True, False]


def test_queues_show_settings_depth_oldest_wait_and_whether_a_live_runner_serves_them(
    conn: Connection,
) -> None:
    register(conn, "live", {"default": 1}, beat=1.0)
    register(conn, "dead", {"mail": 1}, beat=1.0)
    silence(conn, "dead", 600)
    waiting = [durable.insert(conn, Greet, args={}) for _ in range(2)]
    durable.insert(conn, Gate, queue="mail")
    conn.execute(
        text("UPDATE gen_durable.gd_instances SET run_at = now() - interval '90 s' WHERE id = :id"),
        {"id": waiting[0]},
    )
    durable.pause_queue(conn, "archive")  # settings only: no rows, no runner
    durable.set_queue_limit(conn, "default", 5)
    seen = {q.name: q for q in queues(conn)}
    assert sorted(seen) == ["archive", "default", "mail"]
    assert (seen["archive"].paused, seen["archive"].served, seen["archive"].counts) == (
        True,
        False,
        {},
    )
    assert seen["default"].limit == 5 and seen["default"].served
    assert seen["default"].counts == {"available": 2}
    age = seen["default"].oldest_waiting_age
    assert age is not None and 89 < age < 600
    assert not seen["mail"].served  # only a stale runner serves it
    assert seen["archive"].oldest_waiting_age is None


def test_a_runner_records_its_own_heartbeat_and_reaper_intervals(engine: Engine) -> None:
    runner = Runner(engine, {"default": 1}, lease=6.0, poll_interval=0.2).start()
    try:
        with engine.connect() as conn:
            [seen] = workers(conn)
            [row] = store.fleet.runners(conn, None)
        assert seen.id == runner.node_id and seen.heartbeat_interval == 2.0  # lease / 3
        assert row.reaper_interval == 1.5  # lease / 4
    finally:
        runner.stop()
