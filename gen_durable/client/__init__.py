"""The client API (L3): insert, signal, cancel, retry, get, queues and ``explain``, always
in the caller's Session or Connection and transaction. Imports the storage layer, the
domain and L0; never the runtime."""

from __future__ import annotations

from gen_durable.client.explain import Explanation, explain
from gen_durable.client.insert import insert, insert_all
from gen_durable.client.operations import (
    cancel,
    get,
    pause_queue,
    resume_queue,
    retry,
    set_queue_limit,
)
from gen_durable.client.signal import signal
from gen_durable.client.targets import Bind

__all__ = [
    "Bind",
    "Explanation",
    "cancel",
    "explain",
    "get",
    "insert",
    "insert_all",
    "pause_queue",
    "resume_queue",
    "retry",
    "set_queue_limit",
    "signal",
]
