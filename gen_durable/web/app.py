"""The dashboard as a Flask blueprint (mount it in your app) or a whole WSGI app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
from flask import Blueprint, Flask, Response, g, render_template, request, url_for
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import Forbidden, HTTPException

from gen_durable.errors import DurableError, NotFound, ValidationError
from gen_durable.web import policy
from gen_durable.web.forms import BadInput

REFRESH_SECONDS = 5
"""How often a page with live parts polls for them (no LISTEN: it works behind PgBouncer)."""


@attrs.frozen
class Dashboard:
    """What every view of one mounted dashboard shares."""

    engine: Engine
    authorize: policy.Authorize
    name: str

    def allows(self, action: str, target: object = None) -> bool:
        """Whether the hook allows ``action`` on ``target`` for this request."""
        return self.authorize(request, action, None if target is None else str(target))

    def require(self, action: str, target: object = None) -> None:
        """Abort with 403 unless the hook allows ``action`` on ``target``."""
        if not self.allows(action, target):
            what = "see this page" if action in policy.VIEWS else f"{action} here"
            raise Forbidden(f"You are not allowed to {what}.")

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for one page's reads (one short transaction)."""
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def acting(self) -> Iterator[Session]:
        """A session whose transaction commits when the action returns."""
        with Session(self.engine) as session, session.begin():
            yield session

    def url(self, endpoint: str, **values: Any) -> str:
        """The URL of one of this dashboard's endpoints."""
        return url_for(f"{self.name}.{endpoint}", **values)


_STATUS_OF: dict[type[Exception], int] = {NotFound: 404, ValidationError: 400, BadInput: 400}


def error_page(exc: Exception) -> ResponseReturnValue:
    """A page saying what was wrong, with the matching status (4xx for bad input)."""
    if isinstance(exc, HTTPException):
        code, title, message = exc.code or 500, exc.name, exc.description or ""
    elif isinstance(exc, OperationalError):  # the database is down or unreachable
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "unreachable"
        code, title, message = 503, "Database unavailable", reason
    else:
        code = next((c for t, c in _STATUS_OF.items() if isinstance(exc, t)), 409)
        title = {404: "Not found", 400: "Bad request"}.get(code, "Cannot do that")
        message = f"{type(exc).__name__}: {exc}" if isinstance(exc, DurableError) else str(exc)
    return render_template("gen_durable/error.html", code=code, title=title, message=message), code


def _time(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def create_blueprint(
    engine: Engine,
    *,
    authorize: policy.Authorize | None = None,
    name: str = "gen_durable",
    refresh: float = REFRESH_SECONDS,
    bulk_batch: int = 500,
) -> Blueprint:
    """The dashboard as a Flask blueprint: ``app.register_blueprint(bp, url_prefix="/jobs")``.

    ``authorize(request, action, target) -> bool`` is asked before every page and action
    (default :func:`~gen_durable.web.policy.loopback_only`: pages from this host only, no
    actions). Every action needs the CSRF token of the page's form and is recorded in the
    audit table as ``web:<REMOTE_USER>``. Pages with live parts poll for them every
    ``refresh`` seconds (0: never); a bulk action acts on ``bulk_batch`` rows per request.
    """
    from gen_durable.web import actions, bulk, views  # the routes register on the blueprint

    bp = Blueprint(
        name,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    dash = Dashboard(engine=engine, authorize=authorize or policy.loopback_only, name=name)

    @bp.before_request
    def _csrf() -> None:
        g.gd_csrf = request.cookies.get(policy.CSRF_COOKIE) or policy.new_token()
        if request.method == "POST" and not policy.csrf_ok(request):
            raise Forbidden(
                "The form's security token is missing or wrong (CSRF): reload the page and "
                "try again."
            )

    @bp.after_request
    def _headers(response: Response) -> Response:
        if request.cookies.get(policy.CSRF_COOKIE) != g.get("gd_csrf"):
            response.set_cookie(
                policy.CSRF_COOKIE, g.gd_csrf, httponly=True, samesite="Strict", path="/"
            )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        return response

    @bp.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "u": dash.url,
            "csrf_token": g.get("gd_csrf", ""),
            "csrf_field": policy.CSRF_FIELD,
            "refresh_seconds": refresh,
            "may": dash.allows,
        }

    bp.add_app_template_filter(_time, "gd_time")
    bp.add_app_template_filter(_duration, "gd_duration")
    bp.register_error_handler(HTTPException, error_page)
    bp.register_error_handler(DurableError, error_page)
    bp.register_error_handler(BadInput, error_page)
    bp.register_error_handler(OperationalError, error_page)
    views.register(bp, dash)
    actions.register(bp, dash)
    bulk.register(bp, dash, bulk_batch)
    bp.record_once(lambda state: _compile_templates(state.app))  # last: filters are in
    return bp


def _compile_templates(app: App) -> None:
    """Compile the dashboard's templates once, where it is mounted, rather than on the
    first requests: a threaded server's first requests would compile them in several
    threads at once, which CPython 3.11 before 3.11.8 can fail ("AST constructor recursion
    depth mismatch"); and no request pays for a compile."""
    env = app.jinja_env
    for name in env.list_templates(filter_func=lambda name: name.startswith("gen_durable/")):
        env.get_template(name)


def create_app(
    engine: Engine,
    *,
    authorize: policy.Authorize | None = None,
    url_prefix: str = "",
    refresh: float = REFRESH_SECONDS,
    bulk_batch: int = 500,
) -> Flask:
    """A Flask (WSGI) app serving only the dashboard, at ``url_prefix``. Mount it under a
    prefix of any WSGI app with ``werkzeug.middleware.dispatcher.DispatcherMiddleware``."""
    app = Flask(__name__)
    bp = create_blueprint(engine, authorize=authorize, refresh=refresh, bulk_batch=bulk_batch)
    app.register_blueprint(bp, url_prefix=url_prefix)

    def _not_found(exc: HTTPException) -> ResponseReturnValue:
        body = render_template("gen_durable/error.html", code=404, title=exc.name, message="")
        return body, 404

    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, error_page)
    return app
