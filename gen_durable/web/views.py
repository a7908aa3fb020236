"""The dashboard's pages: overview, instances, one instance, FSM graphs, workers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, timedelta
from urllib.parse import urlencode

from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from gen_durable.client import dashboard as board
from gen_durable.client import fleet
from gen_durable.client import graph as client_graph
from gen_durable.domain.serialization import check_text
from gen_durable.errors import ValidationError
from gen_durable.types import FINISHED, Status
from gen_durable.web import diagram, forms
from gen_durable.web.app import Dashboard
from gen_durable.web.forms import BadInput

STATUS_ORDER = tuple(s.value for s in Status)
FINISHED_ORDER = tuple(s.value for s in Status if s in FINISHED)


def _name(text: str, what: str) -> str:
    try:
        return check_text(text, what)
    except ValidationError as exc:
        raise BadInput(str(exc)) from exc


def _bulk_args(args: Mapping[str, str]) -> dict[str, str] | None:
    """The listing's filter for a bulk action, or None when it says more than one takes."""
    if any(args.get(k) for k in ("key", "from", "to", "worker")):
        return None
    return {k: args[k] for k in ("class", "status", "step", "queue") if args.get(k)}


def register(bp: Blueprint, dash: Dashboard) -> None:
    """Add the pages to ``bp``."""

    @bp.get("/")
    def overview() -> ResponseReturnValue:
        dash.require("view:overview")
        with dash.reading() as conn:
            seen = board.overview(conn)
        since = seen.checked_at - timedelta(minutes=seen.minutes)
        return render_template(
            "gen_durable/overview.html",
            overview=seen,
            statuses=STATUS_ORDER,
            finished_statuses=FINISHED_ORDER,
            since=since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            page="overview",
        )

    @bp.get("/instances")
    def instances() -> ResponseReturnValue:
        dash.require("view:instances")
        args = request.args
        where = forms.instance_filter(args)
        before, after = forms.cursor(args, "before"), forms.cursor(args, "after")
        if before is not None and after is not None:
            raise BadInput("pass before or after, not both")
        limit = forms.page_size(args)
        with dash.reading() as conn:
            found = board.instance_page(conn, where, before=before, after=after, limit=limit)
        kept = {k: v for k, v in args.items() if k not in ("before", "after") and v}

        def page_url(**cursor: int) -> str:
            return dash.url("instances") + "?" + urlencode({**kept, **cursor})

        return render_template(
            "gen_durable/instances.html",
            found=found,
            args=args,
            statuses=STATUS_ORDER,
            newer=page_url(after=found.newer) if found.newer is not None else None,
            older=page_url(before=found.older) if found.older is not None else None,
            first=page_url() if before is not None or after is not None else None,
            selectable=dash.allows("bulk_retry") or dash.allows("bulk_cancel"),
            bulk_args=_bulk_args(args),
            page="instances",
        )

    @bp.get("/instances/<path:target>")
    def instance(target: str) -> ResponseReturnValue:
        key = forms.target(target)
        dash.require("view:instance", key)
        with dash.reading() as conn:
            detail = board.instance_detail(conn, key)
        snap = detail.snapshot
        return render_template(
            "gen_durable/instance.html",
            d=detail,
            snap=snap,
            state_json=forms.pretty(snap.state),
            result_json=forms.pretty(snap.result),
            pretty=forms.pretty,
            done=request.args.get("done"),
            page="instances",
        )

    @bp.get("/fsm")
    def fsm_index() -> ResponseReturnValue:
        dash.require("view:fsm")
        with dash.reading() as conn:
            names = board.classes(conn)
        return render_template("gen_durable/fsm_index.html", names=names, page="fsm")

    @bp.get("/fsm/<name>")
    def fsm(name: str) -> ResponseReturnValue:
        name = _name(name, "a class name")
        dash.require("view:fsm", name)
        with dash.reading() as conn:
            graph = client_graph.fsm_graph(conn, name)
        return render_template(
            "gen_durable/fsm.html",
            graph=graph,
            drawing=diagram.layout(graph),
            page="fsm",
        )

    @bp.get("/workers")
    def workers() -> ResponseReturnValue:
        dash.require("view:workers")
        with dash.reading() as conn:
            found = fleet.workers(conn)
        return render_template("gen_durable/workers.html", workers=found, page="workers")
