"""How a client call addresses the caller's transaction, an instance and an actor; and
the ``now=`` it may pin the database's present with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from gen_durable.domain import serialization
from gen_durable.errors import ValidationError

Bind = Session | Connection

__all__ = ["Bind", "check_actor", "check_now", "check_target", "connection", "not_found"]


def connection(bind: Bind) -> Connection:
    if isinstance(bind, Session):
        return bind.connection()
    if isinstance(bind, Connection):
        return bind
    raise ValidationError(f"expected a SQLAlchemy Session or Connection, got {type(bind).__name__}")


def check_target(target: object) -> int | str:
    if isinstance(target, bool) or not isinstance(target, int | str):
        raise ValidationError(
            f"target must be an instance id (int) or a correlation key (str), got {target!r}"
        )
    if isinstance(target, str):
        return serialization.check_text(target, "a correlation key")
    if not -serialization.MAX_ID - 1 <= target <= serialization.MAX_ID:
        raise ValidationError(f"an instance id is a 64-bit integer, got {target}")
    return target


def not_found(target: int | str, live: bool) -> str:
    if isinstance(target, int):
        return f"no instance has id {target}"
    if live:
        return f"no unfinished instance has correlation key {target!r}"
    return f"no instance has correlation key {target!r}"


def check_actor(actor: object) -> None:
    if actor is not None:
        serialization.check_text(actor, "actor")


def check_now(now: datetime | None) -> None:
    """Refuse a ``now=`` the database would misread (:func:`serialization.check_moment`)."""
    serialization.check_moment(now, "now")
