"""Bulk retry and cancel: on the rows ticked in a listing, or on every instance a filter
matches (preview, then one keyset batch per request, which shows progress and resumes
where it stopped). The filter flow is :mod:`gen_durable.client.bulk`, shared with the
command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template, request
from flask.typing import ResponseReturnValue

from gen_durable import client as api
from gen_durable.client import bulk
from gen_durable.client import dashboard as board
from gen_durable.errors import DuplicateInstance, InvalidTransition, ValidationError
from gen_durable.web import forms, policy
from gen_durable.web.app import Dashboard
from gen_durable.web.forms import BadInput

MAX_SELECTION = 500
BULK_FILTER = {"class": "class_name", "status": "status", "step": "step", "queue": "queue"}
"""Listing parameter -> :class:`~gen_durable.client.bulk.BulkFilter` field."""


def _action(text: str | None) -> str:
    if text not in bulk.ACTIONS:
        raise BadInput(f"a bulk action is 'cancel' or 'retry', got {str(text)[:40]!r}")
    return str(text)


def bulk_filter(args: Mapping[str, str]) -> bulk.BulkFilter:
    """The bulk filter a listing's parameters name; those it cannot express are refused."""
    extra = sorted(k for k in ("key", "from", "to", "worker") if args.get(k))
    if extra:
        raise BadInput(
            "a bulk action by filter takes class, status, step and queue; remove "
            + ", ".join(extra)
            + " (or tick the rows instead)"
        )
    values: dict[str, Any] = {f: args[n] for n, f in BULK_FILTER.items() if args.get(n)}
    try:
        return bulk.BulkFilter(**values)
    except ValidationError as exc:
        raise BadInput(str(exc)) from exc


def _one(action: str, s: Any, instance_id: int, actor: str) -> bool:
    if action == "cancel":
        return api.cancel(s, instance_id, "cancelled from the dashboard", actor=actor)
    try:
        api.retry(s, instance_id, actor=actor)
    except (InvalidTransition, DuplicateInstance):  # not retryable (any more)
        return False
    return True


def register(bp: Blueprint, dash: Dashboard, batch: int) -> None:
    """Add the bulk pages and actions to ``bp`` (``batch`` rows per request)."""

    @bp.post("/bulk/selection")
    def bulk_selection() -> ResponseReturnValue:
        action = _action(request.form.get("action"))
        dash.require(f"bulk_{action}")
        ids = [forms.instance_id(v) for v in request.form.getlist("id")]
        if not ids:
            raise BadInput("tick at least one row")
        if len(ids) > MAX_SELECTION:
            raise BadInput(f"at most {MAX_SELECTION} rows at once; act on the filter instead")
        actor = policy.actor(request)
        with dash.acting() as s:
            acted = sum(_one(action, s, i, actor) for i in dict.fromkeys(ids))
        back = request.form.get("back", "")
        query = urlencode({"done": "selection", "acted": acted, "skipped": len(ids) - acted})
        target = back if back.startswith(dash.url("instances")) else dash.url("instances")
        return redirect(target + ("&" if "?" in target else "?") + query, code=303)

    @bp.get("/bulk/preview")
    def bulk_preview() -> ResponseReturnValue:
        action = _action(request.args.get("action"))
        dash.require(f"bulk_{action}")
        where = bulk_filter(request.args)
        with dash.reading() as conn:
            seen = bulk.bulk_preview(conn, action, where)  # type: ignore[arg-type]
        return render_template(
            "gen_durable/bulk_preview.html",
            action=action,
            where=where.as_json(),
            args={k: v for k, v in request.args.items() if k in BULK_FILTER and v},
            preview=seen,
            page="instances",
        )

    @bp.post("/bulk/start")
    def bulk_start() -> ResponseReturnValue:
        action = _action(request.form.get("action"))
        dash.require(f"bulk_{action}")
        where = bulk_filter(request.form)
        bound = forms.instance_id(request.form.get("bound", ""), "bound")
        expected = int(forms.instance_id(request.form.get("expected", ""), "expected"))
        reason = request.form.get("reason", "").strip() or "cancelled from the dashboard"
        with dash.acting() as s:
            audit_id = bulk.bulk_start(
                s,
                action,  # type: ignore[arg-type]
                where,
                bound=bound,
                expected=expected,
                actor=policy.actor(request),
                reason=reason,
            )
        return redirect(dash.url("bulk_progress", audit_id=audit_id), code=303)

    @bp.get("/bulk/<int:audit_id>")
    def bulk_progress(audit_id: int) -> ResponseReturnValue:
        dash.require("view:instances", audit_id)
        with dash.reading() as conn:
            progress = board.bulk_progress(conn, audit_id)
        return render_template("gen_durable/bulk.html", p=progress, page="instances")

    @bp.post("/bulk/<int:audit_id>/step")
    def bulk_step(audit_id: int) -> ResponseReturnValue:
        with dash.reading() as conn:
            action = board.bulk_progress(conn, audit_id).action
        dash.require(f"bulk_{action}", audit_id)
        with dash.acting() as s:
            bulk.bulk_step(s, audit_id, batch=batch)
        return redirect(dash.url("bulk_progress", audit_id=audit_id), code=303)
