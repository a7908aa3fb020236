"""The payload limit and the one converter, at their documented path.

They live in :mod:`gen_durable.domain.serialization`; this module keeps
``from gen_durable import serialization`` working.
"""

from __future__ import annotations

from gen_durable.domain.serialization import (
    DEFAULT_PAYLOAD_LIMIT,
    MAX_ID,
    MAX_INT32,
    MAX_SECONDS,
    MAX_TEXT_BYTES,
    converter,
    payload_limit,
    set_payload_limit,
)

__all__ = [
    "DEFAULT_PAYLOAD_LIMIT",
    "MAX_ID",
    "MAX_INT32",
    "MAX_SECONDS",
    "MAX_TEXT_BYTES",
    "converter",
    "payload_limit",
    "set_payload_limit",
]
