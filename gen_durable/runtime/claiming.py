"""Claiming a batch: leased rows plus what their steps wake up to, as :class:`Claimed`.

Shared by the dispatcher's pick loop and by :func:`gen_durable.testing.drain`, so a step
run inline in a test sees exactly what a Runner would hand it: the signal pack of an
await and the children of its latest Spawn.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from gen_durable import events, faults, store
from gen_durable.clock import monotonic
from gen_durable.domain import definitions as registry
from gen_durable.domain import routing, versioning
from gen_durable.domain.ratelimit import RateLimit
from gen_durable.runtime.failures import log_failure
from gen_durable.runtime.held import Begins
from gen_durable.runtime.inflight import Lease
from gen_durable.runtime.steps import Claimed
from gen_durable.types import Child, Signal, Status

log = logging.getLogger("gen_durable.runtime")


def claim(
    bind: Begins,
    queue: str,
    fsms: Sequence[str],
    limit: int,
    owner: str,
    lease_seconds: float,
    *,
    at_once: bool = False,
) -> list[Claimed]:
    """Claim up to ``limit`` runnable instances of ``fsms`` in ``queue``.

    ``bind``: an Engine, or the connection a pick loop holds. The lease is ``owner``'s
    for ``lease_seconds``. Emits the ``claim`` event once the claim has committed.

    ``at_once`` (on a claim session's connection, see
    :func:`gen_durable.store.claims.claim_at_once`): first lease what needs no admission
    in a single statement, committed as it completes, and claim in a transaction only
    for the rest (concurrency keys, rate limits, a queue's global limit) and for the
    signal packs and children of the rows leased. Rows it leased are given back if
    what follows fails, so that they need not wait for the reaper.
    """
    return Claims(bind, queue, owner, lease_seconds, at_once=at_once)(fsms, limit)


AT_ONCE_AGAIN_SECONDS = 1.0
"""How long a pick loop claims in a transaction once its queue had rows to admit (keys,
rate limits, a global limit): trying at once first would cost such claims a round trip."""


class Claims:
    """One pick loop's claims (:func:`claim`): at once while its queue's rows need no
    admission; after a claim at once found rows that do, in a transaction for
    :data:`AT_ONCE_AGAIN_SECONDS`, then at once again."""

    def __init__(
        self, bind: Begins, queue: str, owner: str, lease_seconds: float, *, at_once: bool = True
    ) -> None:
        self._bind = bind
        self._queue = queue
        self._owner = owner
        self._lease_seconds = lease_seconds
        self._at_once = at_once
        self._in_transaction_until = 0.0

    def __call__(self, fsms: Sequence[str], limit: int) -> list[Claimed]:
        """Claim up to ``limit`` runnable instances of ``fsms``."""
        if not fsms or limit < 1:
            return []
        request = store.claims.ClaimRequest(
            self._queue, fsms, limit, self._owner, self._lease_seconds, None, known_to(fsms)
        )
        at_once = self._at_once and monotonic() >= self._in_transaction_until
        claimed = self._claim(request, at_once)
        if faults.active is not None:
            faults.hit("after_claim")
        if claimed and events.active("claim"):
            events.emit(
                "claim",
                queue=self._queue,
                node_id=self._owner,
                count=len(claimed),
                instance_ids=[c.id for c in claimed],
            )
        return claimed

    def _claim(self, request: store.claims.ClaimRequest, at_once: bool) -> list[Claimed]:
        early: list[Row[Any]] = []
        try:
            with self._bind.begin() as conn:
                found = store.claims.claim_at_once(conn, request) if at_once else None
                rest = request.limit
                if found is not None:
                    early, admitting = found
                    rest = request.limit - len(early) if admitting else 0
                    if admitting:  # for a while, claims go straight to a transaction
                        self._in_transaction_until = monotonic() + AT_ONCE_AGAIN_SECONDS
                rows = list(early)
                if rest > 0:
                    more = request._replace(limit=rest)
                    rows += store.claims.claim_requested(conn, more, rate_limit_of)
                    rows.sort(key=lambda r: (r.priority, r.run_at, r.id))
                if faults.active is not None:
                    faults.hit("claim", conn)
                waking = [r.id for r in rows if r.await_names]
                pending = store.signals.pending_for(conn, waking) if waking else []
                parents = [r.id for r in rows if r.children_from is not None]
                kids = store.children.latest_of(conn, parents)
                claimed, built = to_claimed(rows, pending, kids)
                store.signals.record_packs(conn, built)
        except BaseException:
            if early:
                _give_back(self._bind, early)
            raise
        return claimed


def _give_back(bind: Begins, rows: Sequence[Row[Any]]) -> None:
    """Rows a failed claim had leased at once, runnable again (:func:`release`)."""
    try:
        release(bind, [Lease(r.id, r.lease_token, r.queue, None) for r in rows])
    except Exception as exc:
        then = "the reaper returns them once their leases expire"
        log_failure(log, logging.WARNING, f"giving back {len(rows)} claim(s)", exc, then)


def release(bind: Begins, leases: Sequence[Lease], ran_on: str | None = None) -> list[int]:
    """Give claims back: runnable again at once, each attempt returned (its signal pack
    stays recorded); the queues' runners are notified. Returns the ids released.

    ``ran_on``: the runner whose steps were still running (a shutdown past its grace):
    each released claim is recorded as a re-run, in the same transaction. None: the
    claims never started (claimed ahead, or leased by a claim that then failed), nothing
    ran.
    """
    with bind.begin() as conn:
        released = store.leases.release(conn, [(x.instance_id, x.token) for x in leases], None)
        if ran_on is not None:
            store.history.record_released(conn, released, ran_on, None)
        store.notify.notify(conn, {x.queue for x in leases})
    if ran_on is not None and released:
        events.emit("release", count=len(released), instance_ids=released, node_id=ran_on)
    return released


def known_to(fsms: Sequence[str]) -> tuple[list[str], list[str]]:
    """The claim's filter for the registered classes among ``fsms``: the steps and state
    versions their code knows (:func:`gen_durable.domain.versioning.claim_keys`)."""
    return _claim_keys(tuple(filter(None, map(registry.lookup, fsms))))


@functools.lru_cache(maxsize=64)
def _claim_keys(classes: tuple[type[registry.Definition], ...]) -> tuple[list[str], list[str]]:
    return versioning.claim_keys(list(classes))


def rate_limit_of(fsm: str, step: str) -> RateLimit | None:
    """The rate limit a registered class's step takes from (None: unlimited, or unknown)."""
    cls = registry.lookup(fsm)
    return routing.rate_limit_of(cls, step) if cls is not None else None


def to_claimed(
    rows: Sequence[Row[Any]], pending: Sequence[Row[Any]], kids: Sequence[Row[Any]]
) -> tuple[list[Claimed], dict[int, list[int]]]:
    """Build :class:`Claimed` from claimed rows, their pending signals and latest children.

    An awaiting row's pack holds its pending signals of the awaited names in arrival
    order, at most ``await_limit`` of them. The first claim of a step builds the pack;
    the ids it chose are returned (instance id -> signal ids) for the claim to record,
    and every later claim of that step gets exactly those signals back.
    """
    children: dict[int, list[Child]] = {}
    for k in kids:
        children.setdefault(k.parent_id, []).append(
            Child(id=k.id, fsm=k.fsm, status=Status(k.status), result=k.result, error=k.error)
        )
    by_instance: dict[int, list[Signal]] = {}
    for s in pending:
        by_instance.setdefault(s.instance_id, []).append(
            Signal(id=s.id, name=s.name, payload=s.payload, created_at=s.created_at)
        )
    claimed = []
    built: dict[int, list[int]] = {}
    for r in rows:
        pack: tuple[Signal, ...] = ()
        if r.await_names:
            mine = by_instance.get(r.id, [])
            if r.await_pack is not None:
                recorded = set(r.await_pack)
                pack = tuple(s for s in mine if s.id in recorded)
            else:
                names = set(r.await_names)
                matching = [s for s in mine if s.name in names]
                pack = tuple(matching[: r.await_limit] if r.await_limit else matching)
                built[r.id] = [s.id for s in pack]
        claimed.append(
            Claimed(
                id=r.id,
                fsm=r.fsm,
                queue=r.queue,
                step=r.step,
                state_text=r.state_text,
                attempt=r.attempt,
                max_attempts=r.max_attempts,
                version=r.version,
                lease_token=r.lease_token,
                correlation_key=r.correlation_key,
                parent_id=r.parent_id,
                awaited=pack,
                children=tuple(children.get(r.id, ())),
                trace_context=r.trace_context,
                concurrency_key=r.concurrency_key,
                state_version=r.state_version,
            )
        )
    return claimed, built
