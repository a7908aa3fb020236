"""Extends the leases of in-flight steps in one batched statement, and the node's heartbeat."""

from __future__ import annotations

from sqlalchemy import Engine

from gen_durable import faults, store
from gen_durable.runtime.inflight import Inflight
from gen_durable.runtime.service import Service


class Heartbeat(Service):
    """Every ``interval``: extend held leases (not those past their step timeout)."""

    name = "heartbeat"

    def __init__(
        self,
        engine: Engine,
        inflight: Inflight,
        node_id: str,
        lease_seconds: float,
        interval: float,
    ) -> None:
        super().__init__(interval)
        self._engine = engine
        self._inflight = inflight
        self._node_id = node_id
        self._lease_seconds = lease_seconds
        self.lost_total = 0

    def run_once(self) -> bool:
        """Extend every extendable lease; flag the lost ones so their steps can stop."""
        leases = [(lease.instance_id, lease.token) for lease in self._inflight.extendable()]
        with self._engine.begin() as conn:
            _, lost = store.leases.extend(conn, leases, self._lease_seconds, None)
            store.maintenance.touch_node(conn, self._node_id, None)
            if faults.active is not None and leases:
                faults.hit("heartbeat", conn)
        if lost:
            self.lost_total += len(lost)
            self._inflight.lost(lost)
        return False
