"""Maintenance services: each one small loop with a ``run_once``; none imports another."""

from __future__ import annotations

from gen_durable.domain import registry
from gen_durable.domain.options import HistoryMode
from gen_durable.store.history import FAILING_KINDS


def records(fsm: str, kind: str, default: HistoryMode) -> bool:
    """Whether the history of class ``fsm`` keeps a transition of ``kind`` that no step
    made: by the class's ``history`` option, or ``default`` (the Runner's) when it has
    none or is not registered in this process — as a step's transition is decided."""
    mode = getattr(registry.lookup(fsm), "history", None) or default
    return mode == "all" or (mode == "errors" and kind in FAILING_KINDS)
