"""Cron and leadership: parsing, DST, catch-up, one leader, each tick fired exactly once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from _support.helpers import backend_waiting_on_lock, scalar, wait_until
from sqlalchemy import Engine

import gen_durable as durable
from gen_durable import Cron, Job, Runner, store
from gen_durable.errors import UnknownClass, ValidationError
from gen_durable.runtime.leader import Leader
from gen_durable.runtime.maintenance.cron import CronService

PARIS = ZoneInfo("Europe/Paris")


class Cleanup(Job):
    name = "cron.Cleanup"

    def perform(self, args: Any) -> str:
        return "swept"


def at(*parts: int, tz: Any = UTC) -> datetime:
    return datetime(*parts, tzinfo=tz)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"expression": "61 * * * *"}, ValidationError),
        ({"expression": ""}, ValidationError),
        ({"expression": "* * * * *", "timezone": "Mars/Olympus"}, ValidationError),
        ({"expression": "* * * * *", "grace": -1}, ValidationError),
        ({"expression": "* * * * *", "catch_up": "all"}, ValidationError),
        ({"expression": "* * * * *", "cls": "no.such.Job"}, UnknownClass),
        ({"expression": "* * * * *", "args": {"x": float("nan")}}, ValidationError),
    ],
)
def test_bad_schedules_raise_typed_errors(kwargs: dict[str, Any], error: type[Exception]) -> None:
    expression = kwargs.pop("expression")
    cls = kwargs.pop("cls", Cleanup)
    with pytest.raises(error):
        Cron(expression, cls, **kwargs)


def test_a_local_time_that_does_not_exist_fires_at_the_next_valid_moment() -> None:
    nightly = Cron("30 2 * * *", Cleanup, timezone="Europe/Paris")
    ticks = list(nightly.ticks(at(2026, 3, 28, 12), at(2026, 3, 30, 12)))
    assert [t.astimezone(PARIS).isoformat() for t in ticks] == [
        "2026-03-29T03:00:00+02:00",  # 02:30 was skipped by the clocks going forward
        "2026-03-30T02:30:00+02:00",
    ]


def test_a_fixed_local_time_in_a_repeated_hour_fires_once() -> None:
    nightly = Cron("30 2 * * *", Cleanup, timezone="Europe/Paris")
    ticks = list(nightly.ticks(at(2026, 10, 24, 12), at(2026, 10, 26, 12)))
    assert [t.astimezone(PARIS).isoformat() for t in ticks] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_catch_up_skips_or_runs_the_last_missed_tick_once() -> None:
    now = at(2026, 11, 24, 12, 0, 30)
    last = now - timedelta(hours=1)
    skip = Cron("*/10 * * * *", Cleanup, grace=60, catch_up="skip")
    last_one = Cron("*/10 * * * *", Cleanup, grace=60, catch_up="last")
    assert skip.due(last, now) == [at(2026, 11, 24, 12, 0)]  # within grace: fires
    assert last_one.due(last, now) == [at(2026, 11, 24, 11, 50), at(2026, 11, 24, 12, 0)]
    assert skip.due(None, now) == [at(2026, 11, 24, 12, 0)]  # a new schedule: one tick
    quiet = at(2026, 11, 24, 12, 5)
    assert skip.due(at(2026, 11, 24, 12, 0), quiet) == []
    assert last_one.due(last, quiet) == [at(2026, 11, 24, 12, 0)]


def test_leadership_is_held_by_one_owner_until_it_expires(engine: Engine) -> None:
    t0 = at(2030, 1, 1)
    with engine.begin() as conn:
        assert store.cron.claim_leadership(conn, "leader", "a", 10, t0)
        assert not store.cron.claim_leadership(conn, "leader", "b", 10, t0)
        assert store.cron.claim_leadership(conn, "leader", "a", 10, t0 + timedelta(seconds=5))
        assert not store.cron.claim_leadership(conn, "leader", "b", 10, t0 + timedelta(seconds=14))
        assert store.cron.claim_leadership(conn, "leader", "b", 10, t0 + timedelta(seconds=16))
        assert not store.cron.claim_leadership(conn, "leader", "a", 10, t0 + timedelta(seconds=17))


def test_a_new_leader_takes_over_when_the_old_one_stops(engine: Engine) -> None:
    a = Leader(engine, "node-a", ttl=1.5)
    b = Leader(engine, "node-b", ttl=1.5)
    a.run_once()
    b.run_once()
    assert a.is_leader and not b.is_leader
    a.stop()  # a clean stop resigns: b takes over at its next renewal
    b.run_once()
    assert b.is_leader and not a.is_leader


def test_a_silent_leader_is_replaced_and_stops_acting_first(engine: Engine) -> None:
    a = Leader(engine, "node-a", ttl=1.5)
    b = Leader(engine, "node-b", ttl=1.5)
    a.run_once()
    assert a.is_leader
    # a falls silent (no renewal, no resignation): b takes over once the lease expires
    wait_until(lambda: (b.run_once() or True) and b.is_leader, timeout=10, interval=0.1)
    assert not a.is_leader  # a stopped trusting its lease before b could take it


def clear_of_a_new_minute(engine: Engine, margin: float = 10.0) -> None:
    """Return at a moment (database time) at least ``margin`` seconds before the next
    minute starts, so that an every-minute schedule gets no new tick during a short test."""
    second = float(str(scalar(engine, "SELECT extract(second FROM clock_timestamp())")))
    if second > 60.0 - margin:
        time.sleep(60.0 - second + 0.2)


def test_a_tick_fires_once_even_when_a_stale_leader_fires_it_too(engine: Engine) -> None:
    schedule = Cron("* * * * *", Cleanup, name="sweep", grace=120)
    clear_of_a_new_minute(engine)  # a new minute's tick would be fired, rightly
    first = CronService(engine, [schedule], lambda: True, 1.0)
    stale = CronService(engine, [schedule], lambda: True, 1.0)
    with engine.connect() as holder:
        tx = holder.begin()
        now = store.cron.database_now(holder)
        [tick] = schedule.due(None, now)
        assert store.cron.record_tick(holder, "sweep", tick)  # the first leader, mid-commit
        done: dict[str, int] = {}

        def fire() -> None:
            stale.run_once()
            done["fired"] = stale.fired

        t = threading.Thread(target=fire)
        t.start()
        backend_waiting_on_lock(engine)
        [instance] = durable.insert_all(holder, [schedule.spec])
        store.cron.link_tick(holder, "sweep", tick, instance)
        tx.commit()
        t.join(10)
    assert done["fired"] == 0
    first.run_once()  # nothing new is due either
    assert first.fired == 0
    assert scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances") == 1


def test_runners_with_the_same_schedule_fire_each_tick_once(engine: Engine) -> None:
    schedule = Cron("* * * * *", Cleanup, name="sweep", grace=120)
    options: dict[str, Any] = {"lease": 5, "poll_interval": 0.2, "cron": [schedule]}
    with Runner(engine, **options) as one, Runner(engine, **options) as two:
        wait_until(
            lambda: scalar(
                engine, "SELECT count(*) FROM gen_durable.gd_instances WHERE status = 'done'"
            )
        )
        assert one.leader is not None and two.leader is not None
        assert one.leader.is_leader != two.leader.is_leader
    ticks = scalar(engine, "SELECT count(*) FROM gen_durable.gd_cron_ticks")
    instances = scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances")
    linked = scalar(engine, "SELECT count(DISTINCT instance_id) FROM gen_durable.gd_cron_ticks")
    assert ticks == instances == linked and ticks in (1, 2)  # 2 if a minute turned meanwhile


def test_duplicate_schedule_names_are_refused(engine: Engine) -> None:
    from gen_durable.errors import ConfigurationError

    twins = [Cron("* * * * *", Cleanup, name="x"), Cron("*/5 * * * *", Cleanup, name="x")]
    with pytest.raises(ConfigurationError):
        Runner(engine, cron=twins)
