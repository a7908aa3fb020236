"""Reads what :mod:`procs.flow_worker` recorded and checks the flow-control bounds on it.

All times are the database's (``clock_timestamp()``), as seconds since the epoch.

Rate limits: a bucket is taken from in the claim's transaction, refilled up to that
transaction's start (``tx_at``) and locked until it commits, so the claims of one bucket
are serialised and their moments (``at``) are in bucket order. Within any window of
``width`` seconds, the claims can have taken at most ``burst + rate * (width + skew)``
tokens, where ``skew`` is the longest a claim took from its transaction's start to its
moment (the refill it got may reach back that far). A step starts ``lag`` after its claim
at most, so its starts obey the same bound with ``width + skew + lag``.

Concurrency keys: a slot is held from the claim (status ``running``) until the status
changes again (the transition committed, the reaper or a release took the lease back). A
step that committed ran inside its slot; one whose lease was taken back may still be
running after its slot was freed (at-least-once), so only committed steps are checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, text

from gen_durable import RateLimit


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def db_time(engine: Engine) -> float:
    """The database's clock now (seconds since the epoch)."""
    [row] = rows(engine, "SELECT extract(epoch FROM clock_timestamp())::float8 AS now_s")
    return float(row.now_s)


def busiest(events: Sequence[tuple[float, float]], width: float) -> float:
    """The largest total weight of the events in ``[t, t + width]``, over every event ``t``."""
    ordered = sorted(events)
    best = total = 0.0
    end = 0
    for t, weight in ordered:
        while end < len(ordered) and ordered[end][0] <= t + width:
            total += ordered[end][1]
            end += 1
        best = max(best, total)
        total -= weight  # the next window starts after this event
    return best


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at ``t`` closes before a start at ``t``)."""
    edges = sorted([(end, 0) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    best = now = 0
    for _, is_start in edges:
        now += 1 if is_start else -1
        best = max(best, now)
    return best


# -- rate limits -----------------------------------------------------------------------------


@dataclass
class Bucket:
    """One bucket's claims and step starts: (moment, weight) each."""

    key: str
    claims: list[tuple[float, float]] = field(default_factory=list)
    starts: list[tuple[float, float]] = field(default_factory=list)
    skew: float = 0.0
    lag: float = 0.0
    deferred: int = 0
    owners: set[str] = field(default_factory=set)
    """The runners (node ids) that took from it."""


def buckets(engine: Engine) -> dict[str, Bucket]:
    """Every rate-limited claim, the start of each run it led to, and the deferrals."""
    found: dict[str, Bucket] = {}
    claimed: dict[tuple[int, int, int], list[tuple[float, str]]] = defaultdict(list)
    for r in rows(
        engine,
        "SELECT instance_id, version, attempt, new, rate_key, rate_weight, owner, "
        "extract(epoch FROM at)::float8 AS at, extract(epoch FROM at - tx_at)::float8 AS skew "
        "FROM flow_status WHERE rate_key IS NOT NULL AND new IN ('running', 'scheduled') "
        "AND old = 'available' ORDER BY id",
    ):
        bucket = found.setdefault(r.rate_key, Bucket(r.rate_key))
        if r.new == "scheduled":  # the bucket could not pay for it yet
            bucket.deferred += 1
            continue
        bucket.claims.append((r.at, r.rate_weight or 1.0))
        bucket.owners.add(r.owner)
        bucket.skew = max(bucket.skew, r.skew)
        claimed[(r.instance_id, r.version, r.attempt)].append((r.at, r.rate_key))
    for s in rows(
        engine,
        "SELECT instance_id, version, attempt, weight, extract(epoch FROM at)::float8 AS at "
        "FROM flow_runs WHERE event = 'start' AND weight IS NOT NULL",
    ):
        before = [c for c in claimed.get((s.instance_id, s.version, s.attempt), []) if c[0] <= s.at]
        assert before, f"a run started without a claim: {s}"
        at, key = max(before)
        bucket = found[key]
        bucket.starts.append((s.at, s.weight))
        bucket.lag = max(bucket.lag, s.at - at)
    return found


def rate_problems(
    found: dict[str, Bucket], limit: RateLimit, widths: Sequence[float]
) -> tuple[list[str], dict[str, Any]]:
    """Windows over a bucket's bound; and per bucket, its busiest windows and slack."""
    problems: list[str] = []
    report: dict[str, Any] = {}
    for key, b in sorted(found.items()):
        seen: dict[str, Any] = {"claims": len(b.claims), "deferred": b.deferred}
        seen["skew_s"], seen["lag_s"] = round(b.skew, 4), round(b.lag, 4)
        for width in widths:
            claims, starts = busiest(b.claims, width), busiest(b.starts, width)
            bound = limit.burst + limit.per_second * (width + b.skew)
            start_bound = bound + limit.per_second * b.lag
            seen[f"busiest_{width}s"] = [claims, round(bound, 2)]
            if claims > bound + 1e-9:
                problems.append(f"{key}: claims took {claims} tokens in {width}s (bound {bound})")
            if starts > start_bound + 1e-9:
                problems.append(
                    f"{key}: steps worth {starts} started in {width}s (bound {start_bound})"
                )
        report[key] = seen
    return problems, report


# -- concurrency keys ------------------------------------------------------------------------


@dataclass
class Key:
    """One key's limit, its slots (claim to status change) and its steps (start to end)."""

    limit: int
    slots: list[tuple[float, float]] = field(default_factory=list)
    steps: list[tuple[float, float]] = field(default_factory=list)
    open: int = 0


def keys(engine: Engine) -> dict[str, Key]:
    """Every keyed instance's slots and committed step runs, by key."""
    found: dict[str, Key] = {}
    held: dict[int, float] = {}
    for r in rows(
        engine,
        "SELECT instance_id, old, new, concurrency_key AS key, concurrency_limit AS lim, "
        "extract(epoch FROM at)::float8 AS at FROM flow_status "
        "WHERE concurrency_key IS NOT NULL ORDER BY instance_id, id",
    ):
        key = found.setdefault(r.key, Key(r.lim))
        if r.old == "running" and r.instance_id in held:
            key.slots.append((held.pop(r.instance_id), r.at))
        if r.new == "running":
            held[r.instance_id] = r.at
    keyed = dict(
        rows(
            engine,
            "SELECT id, concurrency_key FROM gen_durable.gd_instances "
            "WHERE concurrency_key IS NOT NULL",
        )
    )
    for iid, since in held.items():  # still running: the slot is held up to now
        found[keyed[iid]].slots.append((since, float("inf")))
        found[keyed[iid]].open += 1
    begun: dict[tuple[int, int, int, int], float] = {}
    for r in rows(  # runs that committed: a run whose lease was taken back may still run on
        engine,
        "SELECT r.event, r.instance_id, r.version, r.attempt, r.pid, r.key, "
        "extract(epoch FROM r.at)::float8 AS at FROM flow_runs r JOIN chaos_effects e "
        "USING (instance_id, version, attempt, pid) "
        "WHERE r.key IS NOT NULL AND r.weight IS NULL ORDER BY r.id",
    ):
        run = (r.instance_id, r.version, r.attempt, r.pid)
        if r.event == "start":
            begun[run] = r.at
        elif run in begun:
            found[r.key].steps.append((begun.pop(run), r.at))
    return found


def key_problems(found: dict[str, Key]) -> tuple[list[str], dict[str, int]]:
    """Keys whose slots or steps ever overlapped beyond the limit; and each key's peak."""
    problems: list[str] = []
    peaks: dict[str, int] = {}
    for name, key in sorted(found.items()):
        slots, steps = max_overlap(key.slots), max_overlap(key.steps)
        peaks[name] = slots
        if slots > key.limit:
            problems.append(f"key {name}: {slots} slots held at once (limit {key.limit})")
        if steps > key.limit:
            problems.append(f"key {name}: {steps} steps ran at once (limit {key.limit})")
    return problems, peaks
