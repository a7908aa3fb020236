"""``explain()`` / ``gen-durable why`` at its edges: an instance a rate limit holds (its
bucket, partition, debt and when it can pay, told from the bucket row alone) and a lease
whose runner died (its last heartbeat against its own interval, and when a reaper takes
the lease back)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from test_cli import as_json, cli

import gen_durable as durable
from gen_durable import FSM, Done, RateLimit, store
from gen_durable.runtime.claiming import rate_limit_of

KEY = "why.Limited:*:acme"


class Limited(FSM):
    name = "why.Limited"
    steps = ("call",)
    rate_limit = RateLimit(1, per=60, burst=1, partition=lambda s: s["tenant"])

    def call(self, ctx: durable.Context) -> Done:
        return Done()


def db_now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return store.explain.database_now(conn, None)


def limited_pair(engine: Engine) -> tuple[int, int, datetime]:
    """Two instances of one partition; a claim takes the first, the second must wait."""
    with Session(engine) as s, s.begin():
        first, second = durable.insert_all(
            s, [Limited.new(state={"tenant": "acme"}) for _ in range(2)]
        )
    t0 = db_now(engine)
    with engine.begin() as conn:
        claimed = store.claims.claim(
            conn, "default", [Limited.name], 10, "n", 30, t0, rate_limit_of
        )
    assert [r.id for r in claimed] == [first]
    return first, second, t0


def explained(engine: Engine, instance_id: int, at: datetime) -> durable.Explanation:
    with engine.connect() as conn:
        return durable.explain(conn, instance_id, now=at)


def test_a_rate_limited_instance_names_its_bucket_and_when_it_can_pay(engine: Engine) -> None:
    _, second, t0 = limited_pair(engine)
    with engine.connect() as conn:
        [bucket] = store.ratelimits.buckets(conn, [KEY], None)
    assert (bucket.rate, bucket.period, bucket.burst) == (1.0, 60.0, 1.0)  # stored by the claim
    found = explained(engine, second, t0 + timedelta(seconds=15))
    assert found.reason == "rate_limited"
    assert (found.rate_bucket, found.rate_partition) == (KEY, "acme")
    assert found.rate_tokens is not None and abs(found.rate_tokens - 0.25) < 1e-6
    assert found.rate_can_pay_at == t0 + timedelta(seconds=60)
    assert found.rate_debt_until is None
    assert "partition 'acme'" in found.summary and "refilling 1 every 1m up to 1" in found.summary
    assert "can pay for it at" in found.summary and "(in 45s)" in found.summary

    # Past its due time and refilled: it is due, the bucket can pay, what holds it is
    # that no runner is live.
    due = explained(engine, second, t0 + timedelta(seconds=90))
    assert due.reason == "no_runner" and due.rate_tokens == 1.0
    assert "It is due" in due.summary and "can pay for it now" in due.summary


def test_a_bucket_in_debt_says_until_when(engine: Engine) -> None:
    _, second, t0 = limited_pair(engine)
    with engine.begin() as conn:
        store.ratelimits.indebt(conn, [(KEY, 300.0)], t0)
    found = explained(engine, second, t0 + timedelta(seconds=90))
    assert found.reason == "rate_limited"
    assert found.rate_debt_until == found.rate_can_pay_at == t0 + timedelta(seconds=300)
    assert "in debt until" in found.summary and "RateLimited" in found.summary


def test_a_bucket_an_older_runner_made_has_no_refill_to_tell(engine: Engine) -> None:
    _, second, t0 = limited_pair(engine)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE gen_durable.gd_rate_buckets SET rate = NULL, period = NULL, burst = NULL")
        )
    found = explained(engine, second, t0 + timedelta(seconds=15))
    assert found.reason == "scheduled" and found.rate_tokens is None
    assert found.rate_bucket == KEY and "refilling" not in found.summary


def run_on(engine: Engine, owner: str, lease_seconds: int) -> int:
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, Limited, state={"tenant": "x"})
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE gen_durable.gd_instances SET status = 'running', lease_owner = :owner, "
                "lease_token = gen_random_uuid(), "
                "lease_expires_at = now() + make_interval(secs => :lease) WHERE id = :id"
            ),
            {"owner": owner, "lease": lease_seconds, "id": iid},
        )
    return iid


def register(engine: Engine, node: str, beat: float, reaper: float, silent: int) -> None:
    with engine.begin() as conn:
        store.maintenance.upsert_node(
            conn,
            node,
            "h",
            1,
            {"default": 1},
            [Limited.name],
            None,
            heartbeat_interval=beat,
            reaper_interval=reaper,
        )
        conn.execute(
            text(
                "UPDATE gen_durable.gd_nodes SET heartbeat_at = now() - make_interval(secs => :s) "
                "WHERE id = :id"
            ),
            {"s": silent, "id": node},
        )


def test_a_lease_of_a_dead_runner_says_its_silence_and_when_it_comes_back(
    engine: Engine, db_url: str
) -> None:
    register(engine, "gone", beat=1.0, reaper=0.25, silent=120)
    register(engine, "alive", beat=600.0, reaper=2.5, silent=0)
    held = run_on(engine, "gone", lease_seconds=3600)
    found = explained(engine, held, db_now(engine))
    assert found.reason == "running" and found.runner_heartbeat_interval == 1.0
    assert found.runner_last_heartbeat is not None
    assert "Runner gone's last heartbeat was 2m ago, against its interval of 1s" in found.summary
    assert "it looks dead" in found.summary
    assert "a live runner's reaper then takes it back within 2.5s" in found.summary

    out = cli("why", str(held), dsn=db_url)
    assert out.returncode == 0, out.stderr
    assert "it looks dead" in out.stdout and "last heartbeat: " in out.stdout
    facts: dict[str, Any] = as_json(cli("why", str(held), "--json", dsn=db_url))
    assert facts["runner_heartbeat_interval"] == 1.0 and facts["lease_owner"] == "gone"

    alive = explained(engine, run_on(engine, "alive", 3600), db_now(engine))
    assert "against its interval of 600s: it is alive." in alive.summary
    unknown = explained(engine, run_on(engine, "nowhere", 3600), db_now(engine))
    assert "Runner nowhere is not registered any more" in unknown.summary
    assert "reaper then takes it back within" in unknown.summary


def test_no_other_live_runner_to_reap_is_said(engine: Engine) -> None:
    register(engine, "gone", beat=1.0, reaper=0.25, silent=120)
    held = run_on(engine, "gone", lease_seconds=60)
    found = explained(engine, held, db_now(engine))
    assert "no other runner is live to reap it: start one" in found.summary


def test_why_of_a_rate_limited_instance_through_the_command_line(
    engine: Engine, db_url: str
) -> None:
    _, second, _ = limited_pair(engine)
    out = cli("why", str(second), dsn=db_url)
    assert out.returncode == 0, out.stderr
    assert f"rate bucket: {KEY}" in out.stdout and "can pay at: " in out.stdout
    assert "reason: rate_limited" in out.stdout
