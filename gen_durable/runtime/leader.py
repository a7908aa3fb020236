"""Leadership: one leader per database and schema, through a leased row.

The lease is renewed by compare-and-set on the owner, with a database-time expiry — no
session advisory lock, so it works behind PgBouncer. Locally, leadership is trusted only
for most of the lease, measured from before the renewal was sent, so an old leader stops
acting before a new one can take over.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from gen_durable import events, store
from gen_durable.clock import monotonic
from gen_durable.runtime.service import Service

log = logging.getLogger("gen_durable.runtime")

TRUST = 0.8
"""The share of the lease during which a leader acts on its last renewal."""


class Leader(Service):
    """Takes and renews the ``role`` lease every third of ``ttl`` seconds."""

    name = "leader"

    def __init__(self, engine: Engine, owner: str, *, role: str = "leader", ttl: float = 15.0):
        super().__init__(ttl / 3)
        self._engine = engine
        self.owner = owner
        self.role = role
        self._ttl = ttl
        self._trusted_until = 0.0
        self.changes = 0

    @property
    def is_leader(self) -> bool:
        """True while this runner may act as the leader."""
        return monotonic() < self._trusted_until

    def run_once(self) -> bool:
        """Take or renew the lease."""
        sent = monotonic()
        with self._engine.begin() as conn:
            held = store.cron.claim_leadership(conn, self.role, self.owner, self._ttl, None)
        was = self.is_leader
        self._trusted_until = sent + TRUST * self._ttl if held else 0.0
        if held != was:
            self.changes += 1
            log.info("%s %s leadership", self.owner, "took" if held else "lost")
            events.emit("leadership", role=self.role, node_id=self.owner, leader=held)
        return False

    def stop(self, timeout: float | None = None) -> None:
        """Stop renewing and resign, so another runner takes over at once."""
        super().stop(timeout)
        if self._trusted_until:
            self._trusted_until = 0.0
            events.emit("leadership", role=self.role, node_id=self.owner, leader=False)
            try:
                with self._engine.begin() as conn:
                    store.cron.resign(conn, self.role, self.owner)
            except Exception as exc:  # the lease simply expires
                log.warning("could not resign leadership: %s", exc)
