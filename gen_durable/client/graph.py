"""The transition graph of a class: the steps it declares, the transitions its recorded
history made (with counts), and how many unfinished instances sit at each step now.

One source for ``gen-durable graph`` and the dashboard's FSM page.
"""

from __future__ import annotations

from collections import defaultdict

import attrs

from gen_durable import store
from gen_durable.client.dashboard import history_mode
from gen_durable.client.targets import Bind, connection
from gen_durable.domain import registry, serialization
from gen_durable.store import dashboard as sql

__all__ = ["OUTSIDE_KINDS", "FsmGraph", "GraphEdge", "edges", "fsm_graph"]

OUTSIDE_KINDS = frozenset(
    {store.history.TIMEOUT, store.history.LEASE_EXPIRED, store.history.OUTSIDE_CANCEL}
)
"""The kinds of transitions no step made: a timer that fired, a lease the reaper took
back on the last attempt, a cancel from outside."""


@attrs.frozen
class GraphEdge:
    """A recorded transition: ``source`` None is where instances started (kind
    ``"start"``), ``target`` None is where they finished."""

    source: str | None
    target: str | None
    kind: str
    count: int

    @property
    def outside(self) -> bool:
        """True when no step made it (:data:`OUTSIDE_KINDS`): drawn dashed."""
        return self.kind in OUTSIDE_KINDS


def edges(bind: Bind, fsm: str) -> list[GraphEdge]:
    """Every distinct recorded transition of class ``fsm`` with how many times it happened,
    starts first (empty: no history is recorded for it). Reads every history row of it."""
    serialization.check_text(fsm, "a class name")
    found, starts = store.history.edges(connection(bind), fsm)
    if not found:
        return []
    return [GraphEdge(None, s.from_step, "start", s.n) for s in starts] + [
        GraphEdge(e.from_step, e.to_step, e.kind, e.n) for e in found
    ]


@attrs.frozen
class FsmGraph:
    """What the FSM page draws."""

    fsm: str
    declared: tuple[str, ...]
    """The steps the class declares, in order (empty: the class is not imported here)."""
    initial: str | None
    edges: tuple[GraphEdge, ...]
    at_step: dict[str, dict[str, int]]
    """Unfinished instances per step, by status."""
    history_mode: str | None

    @property
    def steps(self) -> tuple[str, ...]:
        """The declared steps, then any other step seen in history or in the table."""
        seen = dict.fromkeys(self.declared)
        for e in self.edges:
            for name in (e.source, e.target):
                if name is not None:
                    seen.setdefault(name)
        for name in sorted(self.at_step):
            seen.setdefault(name)
        return tuple(seen)


def fsm_graph(bind: Bind, fsm: str) -> FsmGraph:
    """The graph of class ``fsm`` (registry name)."""
    found = edges(bind, fsm)
    at_step: dict[str, dict[str, int]] = defaultdict(dict)
    for row in sql.steps_now(connection(bind), fsm):
        at_step[row.step][row.status] = row.n
    cls = registry.lookup(fsm)
    declared: tuple[str, ...] = tuple(getattr(cls, "_gd_steps", ())) if cls else ()
    initial = cls._gd_initial if cls is not None and declared else None
    return FsmGraph(
        fsm=fsm,
        declared=declared,
        initial=initial,
        edges=tuple(found),
        at_step=dict(at_step),
        history_mode=history_mode(fsm),
    )
