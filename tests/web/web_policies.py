"""An authorisation hook to plug into ``gen-durable web --authorize``."""

from __future__ import annotations

from flask import Request

from gen_durable.web.policy import is_loopback


def loopback_acts(request: Request, action: str, target: str | None) -> bool:
    """Anyone on this host may see and do everything."""
    return is_loopback(request)
