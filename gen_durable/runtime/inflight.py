"""The leases a runner holds right now, shared by the executor and the heartbeat."""

from __future__ import annotations

import threading
import uuid

import attrs

from gen_durable.clock import monotonic
from gen_durable.domain.context import Flag


@attrs.define
class Lease:
    """One claimed instance: its fencing token, cancel flag and step deadline."""

    instance_id: int
    token: uuid.UUID
    queue: str
    deadline: float | None
    cancel: Flag = attrs.field(factory=Flag)


class Inflight:
    """Thread-safe registry of held leases."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[int, Lease] = {}

    def add(self, lease: Lease) -> None:
        """Register a claimed lease."""
        with self._lock:
            self._leases[lease.instance_id] = lease

    def remove(self, instance_id: int) -> None:
        """Forget a lease whose step has committed (or was given up)."""
        with self._lock:
            self._leases.pop(instance_id, None)

    def extendable(self) -> list[Lease]:
        """Leases to extend: those whose step is not past its timeout.

        A step past its timeout is flagged (``ctx.cancelled``): its lease will lapse and
        its commit will be fenced out, so it may as well stop.
        """
        now = monotonic()
        keep: list[Lease] = []
        with self._lock:
            for lease in self._leases.values():
                if lease.deadline is None or lease.deadline > now:
                    keep.append(lease)
                else:
                    lease.cancel.set()
        return keep

    def lost(self, instance_ids: set[int]) -> None:
        """Flag leases the database no longer grants (cancelled, reaped)."""
        with self._lock:
            for instance_id in instance_ids:
                lease = self._leases.get(instance_id)
                if lease is not None:
                    lease.cancel.set()

    def snapshot(self) -> list[Lease]:
        """Every held lease."""
        with self._lock:
            return list(self._leases.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._leases)
