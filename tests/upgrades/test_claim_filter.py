"""The rolling-deploy filter of the claim on one batch that mixes rows in different
situations: each row is claimed exactly when its own class knows its own step and its
own state version (a step or version known only to another class does not count)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Done, store
from gen_durable.domain import registry
from gen_durable.domain.versioning import claim_keys
from gen_durable.store import models


class Alpha(FSM):
    name = "filter.Alpha"
    steps = ("start", "ship")
    state_version = 2
    step_aliases = {"send": "ship"}

    @durable.upgrades_state(from_version=1)
    def _v2(state: dict[str, object]) -> dict[str, object]:
        return state

    def start(self, ctx: durable.Context) -> Done:
        return Done()

    def ship(self, ctx: durable.Context) -> Done:
        return Done()


class Beta(FSM):
    name = "filter.Beta"
    steps = ("begin", "end")

    def begin(self, ctx: durable.Context) -> Done:
        return Done()

    def end(self, ctx: durable.Context) -> Done:
        return Done()


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    registry.forget(Alpha.name)
    registry.forget(Beta.name)


def place(engine: Engine, cls: type[FSM], step: str, version: int, queue: str = "q") -> int:
    """A runnable row of ``cls`` at ``step`` in state version ``version``."""
    with Session(engine) as s, s.begin():
        iid = durable.insert(s, cls, queue=queue)
        s.execute(
            update(models.instances)
            .where(models.instances.c.id == iid)
            .values(step=step, state_version=version)
        )
    return iid


def test_one_claim_takes_exactly_the_rows_their_own_class_knows(engine: Engine) -> None:
    claimable = {
        place(engine, Alpha, "start", 2),  # current
        place(engine, Alpha, "ship", 1),  # older version: upgraded on load
        place(engine, Alpha, "send", 2),  # an aliased step
        place(engine, Beta, "end", 1),
    }
    left = {
        place(engine, Alpha, "gone", 2),  # a removed step, no alias
        place(engine, Alpha, "start", 3),  # a version newer than the code
        place(engine, Alpha, "begin", 2),  # Beta's step, not Alpha's
        place(engine, Beta, "start", 1),  # Alpha's step, not Beta's
        place(engine, Beta, "begin", 2),  # Alpha knows version 2, Beta does not
        place(engine, Beta, "send", 1),  # Alpha's alias, not Beta's
    }
    elsewhere = place(engine, Alpha, "start", 2, queue="other")
    known = claim_keys([Alpha, Beta])
    with engine.begin() as conn:
        rows = store.claims.claim(
            conn, "q", [Alpha.name, Beta.name], 50, "runner", 60, None, None, known
        )
    assert {r.id for r in rows} == claimable
    with engine.connect() as conn:  # the rows left alone are untouched, still runnable
        for iid in (*left, elsewhere):
            assert store.instances.fetch(conn, iid).status == "available"  # type: ignore[union-attr]
    # Without the filter (a caller that claims by hand) every row of the queue is taken.
    with engine.begin() as conn:
        rest = store.claims.claim(conn, "q", [Alpha.name, Beta.name], 50, "runner", 60, None)
    assert {r.id for r in rest} == left
