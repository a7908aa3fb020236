"""The dashboard through Flask's test client (no browser): bad input gives a 4xx page,
the authorisation hook and CSRF guard every action, actions are audited as
``web:<user>``, and the client-layer reads it stands on."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask, Request
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session
from web_scenario import BIG, Order, Population, populate, status_of

from gen_durable import Runner, cancel, insert, store
from gen_durable.client import dashboard, graph
from gen_durable.errors import ValidationError
from gen_durable.web import create_app, read_only

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
REMOTE = {"REMOTE_ADDR": "10.1.2.3"}


def allow_all(request: Request, action: str, target: str | None) -> bool:
    return True


@pytest.fixture
def world(engine: Engine) -> Population:
    return populate(engine)


def client_for(engine: Engine, **options: Any) -> FlaskClient:
    app: Flask = create_app(engine, **options)
    return app.test_client()


@pytest.fixture
def acting(engine: Engine) -> Iterator[FlaskClient]:
    yield client_for(engine, authorize=allow_all)


def token_of(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = TOKEN.search(page.text)
    assert found, "the page has no action form"
    return found.group(1)


def test_pages_render_and_show_big_integers_exactly(world: Population, acting: FlaskClient) -> None:
    for path in ("/", "/instances", "/fsm", f"/fsm/{Order.name}", "/instances?status=failed"):
        assert acting.get(path).status_code == 200, path
    page = acting.get(f"/instances/{world.awaiting}").text
    assert str(BIG) in page  # rendered by the server as text, never through a float
    assert "Waiting for" in page or "awaiting" in page
    by_key = acting.get("/instances/order-big")
    assert by_key.status_code == 200 and f"Instance {world.awaiting}" in by_key.text
    failed = acting.get(f"/instances/{world.failed}").text
    assert "ConnectionError" in failed and "carrier unreachable" in failed
    assert "Traceback" in failed
    batch = acting.get(f"/instances/{world.batch}").text
    assert all(f">{kid}</a>" in batch for kid in world.children)


@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("/instances/999999999", 404, "no instance has id 999999999"),
        ("/instances/no-such-key", 404, "no-such-key"),
        ("/instances/99999999999999999999999", 400, "64-bit"),
        ("/instances?status=bogus", 400, "unknown status"),
        ("/instances?from=yesterday", 400, "ISO 8601"),
        ("/instances?before=abc", 400, "before must be"),
        ("/instances?before=5&after=3", 400, "not both"),
        ("/instances?limit=0", 400, "limit must be"),
        ("/instances?class=%00", 400, "class"),
        ("/no/such/page", 404, "Not Found"),
    ],
)
def test_bad_input_gives_a_clear_4xx_page(
    world: Population, acting: FlaskClient, path: str, code: int, words: str
) -> None:
    response = acting.get(path)
    assert response.status_code == code, response.text
    assert words in response.text


def test_default_policy_views_from_loopback_only_and_denies_every_action(
    world: Population, engine: Engine
) -> None:
    client = client_for(engine)
    assert client.get("/").status_code == 200
    assert client.get("/", environ_overrides=REMOTE).status_code == 403
    page = client.get(f"/instances/{world.failed}").text
    assert 'id="retry"' not in page and "You may look, not act" in page
    token = client.get_cookie("gd_csrf")
    assert token is not None
    refused = client.post(f"/instances/{world.failed}/retry", data={"csrf_token": token.value})
    assert refused.status_code == 403
    assert status_of(engine, world.failed) == "failed"


def test_read_only_policy_shows_every_page_to_anyone_and_allows_no_action(
    world: Population, engine: Engine
) -> None:
    client = client_for(engine, authorize=read_only)
    assert client.get("/", environ_overrides=REMOTE).status_code == 200
    client.get("/")
    token = client.get_cookie("gd_csrf")
    assert token is not None
    response = client.post("/queues/orders/pause", data={"csrf_token": token.value})
    assert response.status_code == 403
    with Session(engine) as s:
        assert not any(q.paused for q in store.queues.settings(s.connection()))


def test_a_post_without_the_csrf_token_is_refused(world: Population, acting: FlaskClient) -> None:
    acting.get("/")  # sets the cookie
    missing = acting.post(f"/instances/{world.failed}/retry")
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = acting.post(f"/instances/{world.failed}/retry", data={"csrf_token": "forged"})
    assert wrong.status_code == 403


def test_actions_act_and_are_audited_with_the_web_user(
    world: Population, engine: Engine, acting: FlaskClient
) -> None:
    environ = {"REMOTE_USER": "alice"}
    token = token_of(acting, f"/instances/{world.failed}")
    done = acting.post(
        f"/instances/{world.failed}/retry", data={"csrf_token": token}, environ_overrides=environ
    )
    assert done.status_code == 303 and "done=retried" in done.headers["Location"]
    assert status_of(engine, world.failed) == "available"
    acting.post(f"/instances/{world.plain[0]}/cancel", data={"csrf_token": token})
    assert status_of(engine, world.plain[0]) == "cancelled"
    sent = acting.post(
        f"/instances/{world.awaiting}/signal",
        data={"csrf_token": token, "name": "payment", "payload": '{"amount": 1152921504606846977}'},
    )
    assert sent.status_code == 303
    for path, form in (
        ("/queues/orders/pause", {}),
        ("/queues/orders/resume", {}),
        ("/queues/orders/limit", {"limit": "3"}),
    ):
        assert acting.post(path, data={"csrf_token": token, **form}).status_code == 303, path
    with Session(engine) as s:
        conn = s.connection()
        rows = store.audit.listing(conn, limit=50)
        audit = {(r.action, r.actor) for r in rows}
        limit = {q.name: q.concurrency_limit for q in store.queues.settings(conn)}
        signals = store.instances.fetch_signals(conn, world.awaiting)
    assert ("retry", "web:alice") in audit
    assert {"cancel", "signal", "pause", "resume", "queue_limit"} <= {a for a, _ in audit}
    assert all(actor == "web:anonymous" for a, actor in audit if a != "retry")
    assert limit["orders"] == 3
    assert signals[-1].payload == {"amount": BIG}


def test_a_retry_says_where_a_cancelled_instance_resumes(
    world: Population, engine: Engine, acting: FlaskClient
) -> None:
    with Session(engine) as s, s.begin():
        cancel(s, world.awaiting)
    token = token_of(acting, f"/instances/{world.awaiting}")
    done = acting.post(f"/instances/{world.awaiting}/retry", data={"csrf_token": token})
    assert done.status_code == 303 and "done=retried_awaiting" in done.headers["Location"]
    assert status_of(engine, world.awaiting) == "awaiting"  # parked again, not run
    page = acting.get(done.headers["Location"]).text
    assert "The instance awaits its signals again." in page


@pytest.mark.parametrize(
    ("path", "form", "words"),
    [
        ("signal", {"name": "payment", "payload": "{not json"}, "not valid JSON"),
        ("signal", {"name": "payment", "payload": "NaN"}, "not valid JSON"),
        ("signal", {"name": "", "payload": "{}"}, "needs a name"),
        ("retry", {}, "InvalidTransition"),
    ],
)
def test_bad_action_input_gives_a_4xx_page_and_writes_nothing(
    world: Population,
    engine: Engine,
    acting: FlaskClient,
    path: str,
    form: dict[str, str],
    words: str,
) -> None:
    token = token_of(acting, f"/instances/{world.awaiting}")
    response = acting.post(
        f"/instances/{world.awaiting}/{path}", data={"csrf_token": token, **form}
    )
    assert 400 <= response.status_code < 500 and words in response.text, response.text
    with Session(engine) as s:
        assert len(store.instances.fetch_signals(s.connection(), world.awaiting)) == 0
    bad_limit = acting.post("/queues/orders/limit", data={"csrf_token": token, "limit": "-2"})
    assert bad_limit.status_code == 400


def test_keyset_pages_cover_every_match_once(world: Population, engine: Engine) -> None:
    where = dashboard.InstanceFilter(queue="bulk")
    seen: list[int] = []
    with engine.connect() as conn:
        page = dashboard.instance_page(conn, where, limit=25)
        assert page.newer is None
        while True:
            seen += [r.id for r in page.rows]
            if page.older is None:
                break
            page = dashboard.instance_page(conn, where, before=page.older, limit=25)
        back = dashboard.instance_page(conn, where, after=page.rows[0].id, limit=25)
    assert seen == sorted(world.plain, reverse=True)
    assert [r.id for r in back.rows] == seen[25:50]
    with pytest.raises(ValidationError):
        dashboard.InstanceFilter(status="nope")
    with pytest.raises(ValidationError):
        dashboard.InstanceFilter(created_after=datetime(2026, 1, 1))  # naive


def test_overview_and_graph_read_what_happened(world: Population, engine: Engine) -> None:
    with engine.connect() as conn:
        seen = dashboard.overview(conn)
        drawn = graph.fsm_graph(conn, Order.name)
        recent = dashboard.instance_page(
            conn, dashboard.InstanceFilter(created_after=datetime.now(UTC) - timedelta(hours=1))
        )
    orders = next(q for q in seen.queues if q.name == "orders")
    assert orders.counts == {"awaiting": 3, "done": 1, "failed": 1}
    assert (orders.done, orders.failed, orders.failure_rate) == (1, 1, 0.5)
    bulk = next(q for q in seen.queues if q.name == "bulk")
    assert bulk.oldest_waiting_age is not None and bulk.oldest_waiting_age >= 0
    edges = {(e.source, e.target, e.kind): e.count for e in drawn.edges}
    assert edges[(None, "start", "start")] == 5  # three orders and the batch's two
    assert edges[("ship", None, "done")] == 1 and edges[("ship", None, "error")] == 1
    assert drawn.declared == ("start", "ship")
    assert drawn.at_step == {"start": {"available": len(world.plain)}, "ship": {"awaiting": 3}}
    assert len(recent.rows) == 50 and recent.older is not None


def test_workers_page_shows_live_runners(world: Population, engine: Engine) -> None:
    runner = Runner(engine, queues={"idle": 2}, node_id="web-test-runner", listen=False).start()
    try:
        page = client_for(engine).get("/workers")
    finally:
        runner.stop()
    assert page.status_code == 200
    assert "web-test-runner" in page.text and "idle</a> (2)" in page.text


def test_bulk_by_filter_previews_then_runs_one_batch_per_request_and_resumes(
    world: Population, engine: Engine
) -> None:
    client = client_for(engine, authorize=allow_all, bulk_batch=25)
    preview = client.get("/bulk/preview?action=cancel&queue=bulk")
    assert preview.status_code == 200 and f"<strong>{len(world.plain)}</strong>" in preview.text
    token = TOKEN.search(preview.text)
    assert token
    form = {"csrf_token": token.group(1), "action": "cancel", "queue": "bulk"}
    form |= {"bound": str(max(world.plain)), "expected": str(len(world.plain))}
    with Session(engine) as s, s.begin():  # inserted after the preview: never touched
        late = insert(s, Order, state={"order": 9}, queue="bulk")
    started = client.post("/bulk/start", data=form, environ_overrides={"REMOTE_USER": "bob"})
    assert started.status_code == 303
    progress_url = started.headers["Location"]
    step_url = progress_url + "/step"
    first = client.post(step_url, data={"csrf_token": token.group(1)})
    assert first.status_code == 303
    page = client.get(progress_url).text
    assert "25 cancelled, 0 skipped" in page and "finished" not in page
    while "<strong>finished</strong>" not in page:  # resume: each request runs one batch
        client.post(step_url, data={"csrf_token": token.group(1)})
        page = client.get(progress_url).text
    assert f"{len(world.plain)} cancelled" in page
    assert {status_of(engine, i) for i in world.plain} == {"cancelled"}
    assert status_of(engine, late) == "available"
    with engine.connect() as conn:
        audit = {(r.action, r.actor) for r in store.audit.listing(conn, limit=200)}
    assert ("bulk_cancel", "web:bob") in audit


def test_bulk_on_a_selection_and_bad_bulk_input(world: Population, engine: Engine) -> None:
    client = client_for(engine, authorize=allow_all)
    token = token_of(client, "/instances?queue=bulk")
    picked = [str(world.plain[0]), str(world.plain[1]), str(world.done)]
    done = client.post(
        "/bulk/selection", data={"csrf_token": token, "action": "retry", "id": picked}
    )
    assert done.status_code == 303 and "acted=0" in done.headers["Location"]
    done = client.post(
        "/bulk/selection", data={"csrf_token": token, "action": "cancel", "id": picked[:2]}
    )
    assert "acted=2" in done.headers["Location"]
    assert status_of(engine, world.plain[0]) == "cancelled"
    for bad in (
        client.get("/bulk/preview?action=explode"),
        client.get("/bulk/preview?action=retry&status=running"),
        client.get("/bulk/preview?action=retry&key=k"),
        client.post("/bulk/selection", data={"csrf_token": token, "action": "retry"}),
        client.get("/bulk/424242"),
    ):
        assert 400 <= bad.status_code < 500, bad.text
    assert client_for(engine).get("/bulk/preview?action=cancel").status_code == 403


def test_an_unreachable_database_is_a_503_page() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
    response = create_app(dead).test_client().get("/")
    assert response.status_code == 503 and "Database unavailable" in response.text


def test_no_request_compiles_a_template(world: Population, engine: Engine) -> None:
    # Compiled once where the dashboard is mounted: a threaded server's first requests
    # would otherwise compile in several threads at once (CPython 3.11 < 3.11.8 can fail).
    app: Flask = create_app(engine, authorize=allow_all)
    compiled: list[str | None] = []
    original = app.jinja_env.compile

    def compile_(source: Any, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        compiled.append(name)
        return original(source, name, *args, **kwargs)

    app.jinja_env.compile = compile_  # type: ignore[method-assign]
    client = app.test_client()
    pages = ["/", "/instances", "/workers", "/fsm", f"/fsm/{Order.name}", "/nowhere"]
    pages += [f"/instances/{world.awaiting}", "/instances/999999999"]
    for path in pages:
        assert client.get(path).status_code in (200, 404), path
    assert compiled == []
