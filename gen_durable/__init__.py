"""gen_durable: durable finite-state machines and jobs whose state lives in PostgreSQL."""

from __future__ import annotations
