"""Statements for leadership and cron ticks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from gen_durable import models
from gen_durable.store._common import db_now, run, seconds

L = models.leaders
T = models.cron_ticks


def database_now(conn: Connection) -> datetime:
    """The database's clock (the only clock stored times are compared with)."""
    value: datetime = run(conn, select(func.now())).scalar_one()
    return value


def claim_leadership(
    conn: Connection, name: str, owner: str, ttl_seconds: float, now: datetime | None
) -> bool:
    """Take or renew the lease on leadership ``name``; True if ``owner`` holds it now.

    Compare-and-set on the owner with a database-time expiry: no session advisory lock,
    so it works behind a transaction-pooling PgBouncer.
    """
    t_now = db_now(now)
    insert = pg_insert(L).values(name=name, owner=owner, expires_at=t_now + seconds(ttl_seconds))
    stmt = insert.on_conflict_do_update(
        index_elements=[L.c.name],
        set_={"owner": insert.excluded.owner, "expires_at": insert.excluded.expires_at},
        where=(L.c.owner == insert.excluded.owner) | (L.c.expires_at < t_now),
    ).returning(L.c.owner)
    return run(conn, stmt).scalar_one_or_none() == owner


def resign(conn: Connection, name: str, owner: str) -> None:
    """Give leadership up at once (a clean shutdown)."""
    run(conn, delete(L).where(L.c.name == name, L.c.owner == owner))


def leader_of(conn: Connection, name: str, now: datetime | None) -> str | None:
    """The current, unexpired leader of ``name``."""
    found: str | None = run(
        conn, select(L.c.owner).where(L.c.name == name, L.c.expires_at > db_now(now))
    ).scalar_one_or_none()
    return found


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
