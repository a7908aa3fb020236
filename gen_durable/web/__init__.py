"""The web dashboard (an edge, L5; the optional ``web`` extra): a Flask blueprint or a
whole WSGI app that reads and acts through the client layer only, with no SQL of its own.

    from gen_durable.web import create_blueprint, read_only
    app.register_blueprint(create_blueprint(engine, authorize=my_policy), url_prefix="/jobs")
"""

from __future__ import annotations

from gen_durable.web.app import create_app, create_blueprint
from gen_durable.web.policy import ACTIONS, VIEWS, Authorize, actor, loopback_only, read_only

__all__ = [
    "ACTIONS",
    "VIEWS",
    "Authorize",
    "actor",
    "create_app",
    "create_blueprint",
    "loopback_only",
    "read_only",
]
