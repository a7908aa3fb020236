"""gen_durable: durable finite-state machines and jobs whose state lives in PostgreSQL.

The public API lives here; the modules behind it are private unless documented.
"""

from __future__ import annotations

from gen_durable import errors
from gen_durable.client import (
    cancel,
    get,
    insert,
    insert_all,
    pause_queue,
    resume_queue,
    retry,
    set_queue_limit,
    signal,
)
from gen_durable.client.explain import Explanation, explain
from gen_durable.domain.context import Context
from gen_durable.domain.cron import Cron
from gen_durable.domain.definitions import FSM, Job, step
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.domain.outcomes import (
    KEEP,
    Await,
    Cancel,
    Done,
    Fail,
    Next,
    Outcome,
    RateLimited,
    Sleep,
    Spawn,
)
from gen_durable.domain.ratelimit import RateLimit
from gen_durable.domain.retry import Backoff
from gen_durable.domain.versioning import StateUpgradeFailed, upgrades_state
from gen_durable.runner import Runner
from gen_durable.runtime.steps import StepReport
from gen_durable.store.models import configure_schema, schema_name
from gen_durable.types import Child, InstanceSnapshot, Signal, SignalInfo, SignalResult, Status
from gen_durable.wait import result, wait

__version__ = "0.1.0"

__all__ = [
    "FSM",
    "KEEP",
    "Await",
    "Backoff",
    "Cancel",
    "Child",
    "Context",
    "Cron",
    "Done",
    "Explanation",
    "Fail",
    "InsertSpec",
    "InstanceSnapshot",
    "Job",
    "Next",
    "Outcome",
    "RateLimit",
    "RateLimited",
    "Runner",
    "Signal",
    "SignalInfo",
    "SignalResult",
    "Sleep",
    "Spawn",
    "StateUpgradeFailed",
    "Status",
    "StepReport",
    "cancel",
    "configure_schema",
    "errors",
    "explain",
    "get",
    "insert",
    "insert_all",
    "pause_queue",
    "result",
    "resume_queue",
    "retry",
    "schema_name",
    "set_queue_limit",
    "signal",
    "step",
    "upgrades_state",
    "wait",
]
