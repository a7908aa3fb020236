"""``gen-durable web`` through its real entry point: it serves the dashboard, imports the
user's classes, plugs in an authorisation hook, and refuses a bad one (exit 2)."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from _support.helpers import TESTS
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from web_scenario import Order

import gen_durable as durable

WEB = TESTS / "web"
LINE = re.compile(r"dashboard on (http://127\.0\.0\.1:\d+)/")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(WEB), str(TESTS)])}


@contextmanager
def serving(db_url: str, *args: str) -> Iterator[str]:
    command = [sys.executable, "-m", "gen_durable", "web", "--dsn", db_url, "--port", "0", *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 60
            while not sel.select(timeout=max(deadline - time.monotonic(), 0)):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(
                        f"no address printed: {proc.stderr and proc.stderr.read()}"
                    )
            found = LINE.search(proc.stdout.readline())
        assert found, "the command printed no address"
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_web_serves_the_dashboard_with_imported_classes_and_a_plugged_in_policy(
    db_url: str, engine: Engine
) -> None:
    with Session(engine) as s, s.begin():
        order = durable.insert(s, Order, state={"order": 1})
    args = ("--import", "web_scenario", "--authorize", "web_policies:loopback_acts")
    with serving(db_url, *args) as base:
        status, overview = fetch(base + "/")
        assert status == 200 and "Overview" in overview
        status, graph = fetch(base + "/fsm/web.Order")
        assert status == 200 and 'data-step="ship"' in graph  # declared steps: imported
        assert fetch(base + "/instances/77")[0] == 404
        assert 'id="cancel"' in fetch(f"{base}/instances/{order}")[1]  # the hook allows it
    with serving(db_url, "--url-prefix", "/jobs") as base:  # the default policy: no action
        status, page = fetch(f"{base}/jobs/instances/{order}")
        assert status == 200 and 'id="cancel"' not in page
        assert fetch(base + "/instances")[0] == 404


def test_web_refuses_a_bad_authorize_hook(db_url: str) -> None:
    for spec, words in (
        ("no_such_module_here:check", "cannot import"),
        ("web_policies", "MODULE:FUNCTION"),
        ("web_policies:nothing", "has no attribute"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gen_durable", "web", "--dsn", db_url, "--authorize", spec],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert words in done.stderr
