"""Time helpers.

Stored times are the database's (``now()``); the runtime never compares its own wall
clock with them. A ``now`` argument lets tests pin the database's notion of the present:
the storage layer writes ``coalesce(:now, now())``.
"""

from __future__ import annotations

import time


def monotonic() -> float:
    """Seconds on the local monotonic clock: for local timeouts and intervals only."""
    return time.monotonic()
