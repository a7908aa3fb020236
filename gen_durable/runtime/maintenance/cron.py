"""Cron: the leader inserts one instance per schedule tick, exactly once across runners."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from gen_durable import client as api
from gen_durable import store
from gen_durable.domain.cron import Cron
from gen_durable.runtime.service import Service

log = logging.getLogger("gen_durable.runtime")


class CronService(Service):
    """Every ``interval`` seconds, while leader, fire the due ticks of every schedule.

    Each tick is recorded under the unique key (schedule, tick) in the same transaction
    as the instance it starts, so a tick fires once even if a stale leader tries too.
    """

    name = "cron"

    def __init__(
        self,
        engine: Engine,
        schedules: Sequence[Cron],
        is_leader: Callable[[], bool],
        interval: float,
    ) -> None:
        super().__init__(interval)
        names = [s.name for s in schedules]
        if len(set(names)) != len(names):
            raise ValueError(f"two cron schedules share a name: {sorted(names)}")
        self._engine = engine
        self._schedules = list(schedules)
        self._is_leader = is_leader
        self.fired = 0

    def run_once(self) -> bool:
        """Fire what is due (only while this runner leads)."""
        if not self._schedules or not self._is_leader():
            return False
        with self._engine.begin() as conn:
            now = store.cron.database_now(conn)
            last = store.cron.last_ticks(conn, [s.name for s in self._schedules])
            for schedule in self._schedules:
                for tick in schedule.due(last.get(schedule.name), now):
                    if store.cron.record_tick(conn, schedule.name, tick):
                        [instance_id] = api.insert_all(conn, [schedule.spec])
                        store.cron.link_tick(conn, schedule.name, tick, instance_id)
                        self.fired += 1
                        log.info("cron %s fired for %s", schedule.name, tick.isoformat())
        return False
