"""``ctx.session``: the step's own transaction, which its transition commits with.

A step that writes through ``ctx.session`` gets a SQLAlchemy ``Session`` opened on first
use; its transition is written in that session's transaction and committed with the
step's writes (exactly once), or the whole is rolled back when the transition is fenced
out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gen_durable import store
from gen_durable.domain.context import Context
from gen_durable.domain.decide import Transition
from gen_durable.store.transitions import Committed

log = logging.getLogger("gen_durable.runtime")


def open_session(engine: Engine) -> Session:
    """The session a step's ``ctx.session`` opens, in a transaction."""
    session = Session(engine)
    session.begin()
    return session


def commit(
    ctx: Context, transition: Transition, on_committed: Callable[[list[Committed]], None]
) -> bool:
    """Write the transition in the step's session and commit both; False when fenced out
    (the step's writes are rolled back)."""
    session = ctx.session_if_open
    assert session is not None
    try:
        connection = session.connection()
        landed = store.transitions.commit(connection, [transition], None, generic_plan=True)
        if transition.instance_id not in landed:
            session.rollback()
            return False
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    on_committed(list(landed.values()))
    return True


def discard(ctx: Context) -> None:
    """Roll back and close a step's session (the step failed: nothing it wrote stays)."""
    session = ctx.session_if_open
    if session is not None:
        try:
            session.rollback()
            session.close()
        except Exception:  # the connection may be gone; nothing was committed
            log.debug("rollback of a failed step's session failed", exc_info=True)
        ctx._session = None
