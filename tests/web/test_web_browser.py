"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the
app served on 127.0.0.1. Every page and action, keyboard navigation, live refresh, bad
input, the authorisation hook and CSRF. Screenshots go to build/screenshots/dashboard/ (the
test run's artifacts), or to the folder GD_SCREENSHOTS names: `make screenshots` writes the
docs' copies in docs/images/dashboard/.

Skipped only when CI is unset and the browser (or Playwright) is missing; with CI set, a
missing browser fails.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_runs import note_browser
from flask import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from web_scenario import BIG, Order, populate, status_of
from werkzeug.serving import make_server

import gen_durable as durable
from gen_durable import store
from gen_durable.web import create_app, read_only
from gen_durable.web.policy import is_loopback

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(
    os.environ.get("GD_SCREENSHOTS")
    or Path(__file__).resolve().parents[2] / "build" / "screenshots" / "dashboard"
)
ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 30_000

if not os.environ.get("CI"):
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium (CI installs it)", allow_module_level=True)
    pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=15_000)  # a loaded CI machine: conditions, not timings


def loopback_acts(request: Request, action: str, target: str | None) -> bool:
    """A plugged-in policy: anyone on this host may see and do everything."""
    return is_loopback(request)


class AsUser:
    """What a host app's login does: the WSGI ``REMOTE_USER`` names the user."""

    def __init__(self, app: Any, user: str) -> None:
        self.app, self.user = app, user

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_USER"] = self.user
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        note_browser(chromium.version)
        yield chromium
        chromium.close()


@pytest.fixture
def serve(engine: Engine) -> Iterator[Callable[..., str]]:
    servers = []

    def start(**options: Any) -> str:
        app = AsUser(create_app(engine, **options), "alice")
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


SHORT_PATHS = """document.querySelectorAll(".traceback").forEach(function (el) {
  el.textContent = el.textContent.replace(/File "[^"]*\\/([^"\\/]+)"/g, 'File "$1"');
});"""
"""Tracebacks in the docs' screenshots name files without this machine's directories."""


def shot(page: Page, name: str) -> None:
    """Save a screenshot for the docs (after the page's assertions: it edits tracebacks)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(SHORT_PATHS)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def audit_actors(engine: Engine) -> set[tuple[str, str | None]]:
    with Session(engine) as s:
        return {(r.action, r.actor) for r in store.audit.listing(s.connection(), limit=100)}


def test_overview_pause_resume_and_limit_a_queue(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    populate(engine)
    base = serve(authorize=loopback_acts, refresh=0)
    page.goto(base + "/")
    row = page.locator('tr[data-queue="orders"]')
    expect(row).to_contain_text("orders")
    expect(page.locator("svg.spark").first).to_be_visible()
    shot(page, "overview")
    row.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_have_text("The queue is paused.")
    expect(page.locator('tr[data-queue="orders"] .badge.paused')).to_be_visible()
    page.locator('tr[data-queue="orders"]').get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_have_text("The queue is resumed.")
    page.get_by_label("Global limit of orders").fill("4")
    page.locator('tr[data-queue="orders"]').get_by_role("button", name="Set").click()
    expect(page.locator('tr[data-queue="orders"] .settings strong')).to_have_text("4")
    actors = audit_actors(engine)
    assert {("pause", "web:alice"), ("resume", "web:alice"), ("queue_limit", "web:alice")} <= actors


def test_instance_list_filters_pages_and_keyboard(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    world = populate(engine)
    base = serve(authorize=loopback_acts, refresh=0)
    page.goto(base + "/instances?queue=bulk")
    rows = page.locator("#instance-list tbody tr")
    expect(rows).to_have_count(50)
    shot(page, "instances")
    newest = sorted(world.plain, reverse=True)
    page.keyboard.press("j")
    expect(rows.nth(0)).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("j")
    expect(rows.nth(2)).to_be_focused()
    page.keyboard.press("k")
    expect(rows.nth(1)).to_be_focused()
    page.keyboard.press("n")  # the older page, by keyboard
    expect(page).to_have_url(re.compile(rf"before={newest[49]}"))
    expect(rows).to_have_count(len(world.plain) - 50)
    shared = page.url
    page.keyboard.press("p")
    expect(page).to_have_url(re.compile(rf"after={newest[50]}"))
    expect(rows.first).to_contain_text(str(newest[0]))
    page.goto(shared)  # a page's URL is its filter and cursor: shareable
    expect(rows.first).to_contain_text(str(newest[50]))
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/instances/{newest[50]}$"))
    page.goto(base + "/instances")
    page.keyboard.press("/")
    expect(page.locator("#filter-class")).to_be_focused()
    page.locator("#filter-class").fill(Order.name)
    page.locator("select[name=status]").select_option("failed")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(str(world.failed))
    page.get_by_role("button", name="Save this filter").click()
    expect(page.locator("#saved-list a")).to_have_attribute("href", re.compile("status=failed"))


def test_instance_page_shows_everything_and_acts(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    world = populate(engine)
    base = serve(authorize=loopback_acts, refresh=0)
    page.goto(f"{base}/instances/{world.awaiting}")
    expect(page.locator("#state-json")).to_contain_text(str(BIG))  # exact, past 2^53
    expect(page.locator("#explain")).to_contain_text("payment")
    expect(page.locator("#timeline tbody tr")).to_have_count(1)
    shot(page, "instance")
    payload = page.locator("textarea[name=payload]")
    payload.fill('{"amount": ')
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".json-error")).to_contain_text("Not valid JSON")
    assert status_of(engine, world.awaiting) == "awaiting"  # nothing was sent
    payload.fill(f'{{"amount": {BIG}}}')
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("status")).to_have_text("The signal was sent.")
    expect(page.locator("#signals")).to_contain_text(str(BIG))

    page.goto(f"{base}/instances/{world.failed}")
    expect(page.locator("#instance-error")).to_contain_text("carrier unreachable")
    expect(page.locator("#instance-error .traceback")).to_contain_text("Traceback")
    shot(page, "instance-failed")
    page.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("The instance is runnable again.")
    assert status_of(engine, world.failed) == "available"

    page.goto(f"{base}/instances/{world.batch}")
    expect(page.locator("#children li")).to_have_count(len(world.children))
    page.goto(f"{base}/instances/{world.children[0]}")
    expect(page.locator("dl.facts")).to_contain_text(str(world.batch))
    page.get_by_label("reason").fill("duplicate order")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_have_text("The instance was cancelled.")
    assert {("retry", "web:alice"), ("cancel", "web:alice"), ("signal", "web:alice")} <= (
        audit_actors(engine)
    )


def test_fsm_graph_is_drawn_as_svg(engine: Engine, serve: Callable[..., str], page: Page) -> None:
    populate(engine)
    base = serve(authorize=read_only, refresh=0)
    page.goto(base + "/fsm")
    page.get_by_role("link", name=Order.name).click()
    graph = page.locator("#fsm-graph")
    expect(graph.locator('g[data-step="ship"] rect')).to_have_count(1)
    expect(graph).to_contain_text("started 5")
    expect(graph.locator('g[data-step="ship"]')).to_contain_text("3 now")
    expect(page.locator("#edges")).to_contain_text("error")
    shot(page, "fsm")
    page.goto(base + "/fsm/web.Unrecorded")
    expect(page.locator("#no-history")).to_contain_text('history = "all"')


def test_live_refresh_shows_new_rows_without_reloading(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    populate(engine, plain=0)
    base = serve(authorize=read_only, refresh=0.5)
    page.goto(base + "/instances?queue=orders")
    page.evaluate("window.gdMarker = 'still here'")
    with Session(engine) as s, s.begin():
        fresh = durable.insert(s, Order, state={"order": 7})
    expect(page.locator(f'tr[data-href$="/instances/{fresh}"]')).to_have_count(1, timeout=WAIT_MS)
    assert page.evaluate("window.gdMarker") == "still here"  # swapped in, not reloaded


def test_bad_input_gives_a_clear_page(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    populate(engine, plain=0)
    base = serve(authorize=loopback_acts, refresh=0)
    for path, code, words in (
        ("/instances/987654321", 404, "no instance has id 987654321"),
        ("/instances?status=lost", 400, "unknown status"),
        ("/instances?to=soon", 400, "ISO 8601"),
        ("/fsm/%00", 400, "class name"),
    ):
        response = page.goto(base + path)
        assert response is not None and response.status == code, path
        expect(page.locator("h1")).to_contain_text(str(code))
        expect(page.locator(".message")).to_contain_text(words)
    shot(page, "error")


def test_invalid_json_is_refused_by_the_server_too(
    engine: Engine, serve: Callable[..., str], browser: Browser
) -> None:
    world = populate(engine, plain=0)
    base = serve(authorize=loopback_acts, refresh=0)
    context = browser.new_context(java_script_enabled=False)  # no check in the browser
    page = context.new_page()
    page.goto(f"{base}/instances/{world.awaiting}")
    page.locator("textarea[name=payload]").fill("{'single': 'quotes'}")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("h1")).to_contain_text("400")
    expect(page.locator(".message")).to_contain_text("not valid JSON")
    context.close()
    with Session(engine) as s:
        assert store.instances.fetch_signals(s.connection(), world.awaiting) == []


def test_authorization_and_csrf(engine: Engine, serve: Callable[..., str], page: Page) -> None:
    world = populate(engine, plain=0)
    retry = f"/instances/{world.failed}/retry"
    for options in ({}, {"authorize": read_only}):  # the default, then read-only
        base = serve(refresh=0, **options)
        page.goto(f"{base}/instances/{world.failed}")
        expect(page.locator("#retry")).to_have_count(0)
        expect(page.locator(".actions")).to_contain_text("You may look, not act")
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "gd_csrf")
        refused = page.request.post(base + retry, form={"csrf_token": token})
        assert refused.status == 403
        page.context.clear_cookies()
    base = serve(authorize=loopback_acts, refresh=0)
    page.goto(f"{base}/instances/{world.failed}")
    missing = page.request.post(base + retry, form={})
    assert missing.status == 403 and "CSRF" in missing.text()
    assert status_of(engine, world.failed) == "failed"
    page.locator("#retry").click()  # the form carries the token: allowed
    expect(page.get_by_role("status")).to_have_text("The instance is runnable again.")


def test_bulk_actions_on_ticked_rows_and_on_a_whole_filter(
    engine: Engine, serve: Callable[..., str], page: Page
) -> None:
    world = populate(engine)
    base = serve(authorize=loopback_acts, refresh=0, bulk_batch=20)
    page.goto(base + "/instances?queue=bulk")
    for instance_id in world.plain[-2:]:
        page.get_by_label(f"select {instance_id}").check()
    page.get_by_role("button", name="Cancel ticked").click()
    expect(page.get_by_role("status")).to_contain_text("2 instance(s) acted on")
    page.locator("#bulk-cancel").click()
    expect(page.locator("#bulk-count")).to_contain_text(f"{len(world.plain) - 2} instance(s)")
    shot(page, "bulk-preview")
    page.locator("#bulk-start").click()  # then one batch of 20 per request, by itself
    expect(page.locator("#bulk-state")).to_contain_text("finished", timeout=WAIT_MS)
    expect(page.locator("#bulk-state")).to_contain_text(f"{len(world.plain) - 2} cancelled")
    shot(page, "bulk-progress")
    assert {status_of(engine, i) for i in world.plain} == {"cancelled"}
    assert ("bulk_cancel", "web:alice") in audit_actors(engine)


def test_workers_page(engine: Engine, serve: Callable[..., str], page: Page) -> None:
    populate(engine, plain=0)
    base = serve(authorize=read_only, refresh=0)
    runner = durable.Runner(engine, queues={"reports": 4, "mail": 2}, listen=False).start()
    try:
        page.goto(base + "/workers")
        row = page.locator(f'tr[data-worker="{runner.node_id}"]')
        expect(row).to_contain_text("reports")
        expect(row).to_contain_text("(4)")
        shot(page, "workers")
    finally:
        runner.stop()
