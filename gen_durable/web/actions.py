"""The dashboard's actions: retry, cancel, signal, pause/resume and limit a queue.

Each is a POST that passes the CSRF check and the authorisation hook, acts through the
client layer in one transaction (recorded in the audit table as ``web:<user>``), then
redirects to a page saying what happened (post/redirect/get).
"""

from __future__ import annotations

from flask import Blueprint, redirect, request
from flask.typing import ResponseReturnValue

from gen_durable import client as api
from gen_durable.domain.serialization import check_text
from gen_durable.errors import ValidationError
from gen_durable.web import forms, policy
from gen_durable.web.app import Dashboard
from gen_durable.web.forms import BadInput


def _queue(name: str) -> str:
    try:
        return check_text(name, "a queue name")
    except ValidationError as exc:
        raise BadInput(str(exc)) from exc


RETRIED = {"awaiting": "retried_awaiting", "scheduled": "retried_scheduled"}
"""The message after a retry, by the status the instance resumed in (else "retried")."""


def register(bp: Blueprint, dash: Dashboard) -> None:
    """Add the actions to ``bp``."""

    def back(instance_id: int, done: str) -> ResponseReturnValue:
        return redirect(dash.url("instance", target=str(instance_id), done=done), code=303)

    @bp.post("/instances/<int:instance_id>/retry")
    def retry(instance_id: int) -> ResponseReturnValue:
        dash.require("retry", instance_id)
        with dash.acting() as s:
            api.retry(s, instance_id, actor=policy.actor(request))
            resumed = api.get(s, instance_id).status  # a cancelled one resumes where it was
        return back(instance_id, RETRIED.get(resumed, "retried"))

    @bp.post("/instances/<int:instance_id>/cancel")
    def cancel(instance_id: int) -> ResponseReturnValue:
        dash.require("cancel", instance_id)
        reason = request.form.get("reason", "").strip() or "cancelled from the dashboard"
        with dash.acting() as s:
            done = api.cancel(s, instance_id, reason, actor=policy.actor(request))
        return back(instance_id, "cancelled" if done else "already_finished")

    @bp.post("/instances/<int:instance_id>/signal")
    def signal(instance_id: int) -> ResponseReturnValue:
        dash.require("signal", instance_id)
        name = request.form.get("name", "").strip()
        if not name:
            raise BadInput("a signal needs a name")
        payload = forms.json_payload(request.form.get("payload", ""))
        key = request.form.get("idempotency_key", "").strip() or None
        with dash.acting() as s:
            sent = api.signal(
                s, instance_id, name, payload, idempotency_key=key, actor=policy.actor(request)
            )
        return back(instance_id, "duplicate_signal" if sent.duplicate else "signalled")

    def queue_done(name: str, done: str) -> ResponseReturnValue:
        return redirect(dash.url("overview", done=done, queue=name), code=303)

    @bp.post("/queues/<name>/pause")
    def pause(name: str) -> ResponseReturnValue:
        name = _queue(name)
        dash.require("pause", name)
        with dash.acting() as s:
            api.pause_queue(s, name, actor=policy.actor(request))
        return queue_done(name, "paused")

    @bp.post("/queues/<name>/resume")
    def resume(name: str) -> ResponseReturnValue:
        name = _queue(name)
        dash.require("resume", name)
        with dash.acting() as s:
            api.resume_queue(s, name, actor=policy.actor(request))
        return queue_done(name, "resumed")

    @bp.post("/queues/<name>/limit")
    def limit(name: str) -> ResponseReturnValue:
        name = _queue(name)
        dash.require("limit", name)
        value = forms.queue_limit(request.form.get("limit", ""))
        with dash.acting() as s:
            api.set_queue_limit(s, name, value, actor=policy.actor(request))
        return queue_done(name, "limited")
