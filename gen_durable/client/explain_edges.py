"""What ``explain()`` says at two edges: an instance a rate limit holds (its bucket, its
debt, when it can pay) and a lease whose runner went silent (its last heartbeat against
its own interval, and when a reaper takes the lease back)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import Connection

from gen_durable import store
from gen_durable.client.explain_text import span, when
from gen_durable.client.fleet import stale_after
from gen_durable.store.instances import InstanceRecord

__all__ = ["RateHold", "lapse", "rate_hold"]


@attrs.frozen
class RateHold:
    """An instance's rate-limit bucket as a claim would find it now."""

    holds: bool
    """The bucket cannot pay for the instance now (short of tokens, or in debt)."""
    text: str
    facts: dict[str, Any]


def _partition(row: InstanceRecord, key: str) -> tuple[str, str]:
    """(scope, partition) of a bucket key ``class:scope:partition`` (scope: a step, or *)."""
    scope, _, partition = key.removeprefix(f"{row.fsm}:").partition(":")
    return scope, partition


def rate_hold(conn: Connection, row: InstanceRecord, at: datetime) -> RateHold | None:
    """Whether the instance's rate-limit bucket holds it, and why; None when it has none."""
    key = row.rate_key
    if key is None:
        return None
    scope, partition = _partition(row, key)
    where = "the whole class" if scope == "*" else f"step {scope!r}"
    part = f", partition {partition!r}" if partition else ""
    named = f"rate-limit bucket {key!r} ({where}{part})"
    facts: dict[str, Any] = {"rate_bucket": key, "rate_partition": partition or None}
    found = store.ratelimits.buckets(conn, [key], None)
    if not found:
        text = f"Its {named} has no row yet: the next claim creates it full."
        return RateHold(False, text, facts)
    bucket = found[0]
    weight = row.rate_weight or 1.0
    in_debt = bucket.debt_until is not None and bucket.debt_until > at
    facts["rate_debt_until"] = bucket.debt_until if in_debt else None
    if bucket.rate is None or bucket.period is None or bucket.burst is None:
        tokens, can_pay, refill = None, bucket.debt_until if in_debt else None, ""
    else:
        per_second = bucket.rate / bucket.period
        elapsed = max((at - bucket.updated_at).total_seconds(), 0.0)
        tokens = min(bucket.burst, bucket.tokens + elapsed * per_second)
        short = max(weight - tokens, 0.0) / per_second
        debt = bucket.debt_until if in_debt and bucket.debt_until is not None else at
        can_pay = max(at + timedelta(seconds=short), debt)
        refill = (
            f" refilling {bucket.rate:g} every {span(bucket.period)} up to {bucket.burst:g},"
            f" holds {tokens:.2f}"
        )
    facts["rate_tokens"], facts["rate_can_pay_at"] = tokens, can_pay
    holds = in_debt or (tokens is not None and tokens < weight)
    text = f"Its {named}{',' if refill else ''}{refill}; it takes {weight:g}."
    if in_debt:
        text += (
            f" The bucket is in debt until {when(bucket.debt_until, at)}: a step refused by "
            "the remote side (RateLimited) emptied it."
        )
    if holds and can_pay is not None:
        text += (
            f" The bucket can pay for it {when(can_pay, at)}, if none ahead of it takes the tokens."
        )
    elif not holds and tokens is not None:
        text += " The bucket can pay for it now."
    return RateHold(holds, text, facts)


def lapse(conn: Connection, row: InstanceRecord, at: datetime) -> tuple[str, dict[str, Any]]:
    """How the runner holding a lease is doing, and when a silent one's lease comes back."""
    owner = row.lease_owner
    runner = store.fleet.runner(conn, owner, None) if owner is not None else None
    if runner is None:
        text = f"Runner {owner} is not registered any more (it stopped, or was forgotten)."
        return text + _taken_back(conn, row, at, runner), {}
    facts = {
        "runner_last_heartbeat": runner.heartbeat_at,
        "runner_heartbeat_interval": runner.heartbeat_interval,
    }
    every = (
        f"against its interval of {runner.heartbeat_interval:g}s"
        if runner.heartbeat_interval
        else "(its interval is not recorded)"
    )
    silent = max((at - runner.heartbeat_at).total_seconds(), 0.0)
    beat = f"Runner {owner}'s last heartbeat was {span(silent)} ago, {every}"
    if silent <= stale_after(runner.heartbeat_interval):
        return f"{beat}: it is alive.", facts
    return (
        f"{beat}: it looks dead (crashed, stalled or cut off).{_taken_back(conn, row, at, runner)}",
        facts,
    )


def _taken_back(
    conn: Connection, row: InstanceRecord, at: datetime, owner: store.fleet.Runner | None
) -> str:
    """When a live runner's reaper takes the lease back (its lapse, plus a reaper pass)."""
    lapses = row.lease_expires_at
    if lapses is None:
        return ""
    reapers = [
        r.reaper_interval
        for r in store.fleet.runners(conn, None)
        if r.id != row.lease_owner
        and (at - r.heartbeat_at).total_seconds() <= stale_after(r.heartbeat_interval)
    ]
    if not reapers:
        return (
            f" Its lease lapses {when(lapses, at)}, but no other runner is live to reap it: "
            "start one."
        )
    known = [r for r in reapers if r is not None]
    within = f" within {min(known):g}s" if known else ""
    return (
        f" Its lease lapses {when(lapses, at)}; a live runner's reaper then takes it back"
        f"{within} and retries the step (if attempts remain)."
    )
