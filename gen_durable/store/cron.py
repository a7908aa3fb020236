"""Statements for leadership and cron ticks."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable.store import models
from gen_durable.store._common import NOW, param, run

L = models.leaders
T = models.cron_ticks


def database_now(conn: Connection) -> datetime:
    """The database's clock (the only clock stored times are compared with)."""
    value: datetime = run(conn, select(func.now())).scalar_one()
    return value


_LEASE = pg_insert(L).values(
    name=param("name", "text"),
    owner=param("owner", "text"),
    expires_at=NOW + param("ttl", "interval"),
)
_CLAIM = _LEASE.on_conflict_do_update(
    index_elements=[L.c.name],
    set_={"owner": _LEASE.excluded.owner, "expires_at": _LEASE.excluded.expires_at},
    where=(L.c.owner == _LEASE.excluded.owner) | (L.c.expires_at < NOW),
).returning(L.c.owner)


def claim_leadership(
    conn: Connection, name: str, owner: str, ttl_seconds: float, now: datetime | None
) -> bool:
    """Take or renew the lease on leadership ``name``; True if ``owner`` holds it now.

    Compare-and-set on the owner with a database-time expiry: no session advisory lock,
    so it works behind a transaction-pooling PgBouncer.
    """
    params = {"name": name, "owner": owner, "ttl": timedelta(seconds=ttl_seconds), "now": now}
    return run(conn, _CLAIM, params).scalar_one_or_none() == owner


def resign(conn: Connection, name: str, owner: str) -> None:
    """Give leadership up at once (a clean shutdown)."""
    run(conn, delete(L).where(L.c.name == name, L.c.owner == owner))


def last_ticks(conn: Connection, schedules: list[str]) -> dict[str, datetime]:
    """The newest recorded tick of each schedule."""
    rows = run(
        conn,
        select(T.c.schedule, func.max(T.c.tick).label("tick"))
        .where(T.c.schedule.in_(schedules))
        .group_by(T.c.schedule),
    ).all()
    return {row.schedule: row.tick for row in rows}


def record_tick(conn: Connection, schedule: str, tick: datetime) -> bool:
    """Record a tick; False if it was recorded already (by this or a stale leader)."""
    stmt = (
        pg_insert(T)
        .values(schedule=schedule, tick=tick)
        .on_conflict_do_nothing(index_elements=[T.c.schedule, T.c.tick])
        .returning(T.c.tick)
    )
    return run(conn, stmt).scalar_one_or_none() is not None


def link_tick(conn: Connection, schedule: str, tick: datetime, instance_id: int) -> None:
    """Remember which instance a tick started."""
    run(
        conn,
        update(T).where(T.c.schedule == schedule, T.c.tick == tick).values(instance_id=instance_id),
    )
