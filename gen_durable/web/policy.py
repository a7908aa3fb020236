"""Who may see and do what: the authorisation hook, its two built-in policies, the actor
recorded in the audit, and the CSRF check of every action.

A hook is ``authorize(request, action, target) -> bool``, called before every page
(``action`` one of :data:`VIEWS`) and every action (one of :data:`ACTIONS`); ``target``
is the instance id, queue or class concerned, or None.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Callable

from flask import Request

Authorize = Callable[[Request, str, str | None], bool]
"""``authorize(request, action, target) -> bool``."""

VIEWS = frozenset({"view:overview", "view:instances", "view:instance", "view:fsm", "view:workers"})
"""The pages, as the ``action`` a hook is asked about."""
ACTIONS = frozenset(
    {"retry", "cancel", "signal", "pause", "resume", "limit", "bulk_retry", "bulk_cancel"}
)
"""The actions that change something (each recorded in the audit table)."""

CSRF_COOKIE = "gd_csrf"
CSRF_FIELD = "csrf_token"


def is_loopback(request: Request) -> bool:
    """True when the request comes from this host (127.0.0.0/8 or ::1)."""
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def loopback_only(request: Request, action: str, target: str | None) -> bool:
    """The default: every page for requests from this host; no action for anyone."""
    return action in VIEWS and is_loopback(request)


def read_only(request: Request, action: str, target: str | None) -> bool:
    """Every page for anyone who reaches it; no action (put it behind your own login)."""
    return action in VIEWS


def actor(request: Request) -> str:
    """The audit actor of a request: ``web:<user>``, the user being the WSGI
    ``REMOTE_USER`` (set by the host application or a proxy), else ``anonymous``."""
    user = request.environ.get("REMOTE_USER") or "anonymous"
    return f"web:{user}"


def new_token() -> str:
    """A fresh CSRF token."""
    return secrets.token_urlsafe(32)


def csrf_ok(request: Request) -> bool:
    """Double-submit check: the form's token equals the (SameSite=Strict) cookie's."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.form.get(CSRF_FIELD, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())
