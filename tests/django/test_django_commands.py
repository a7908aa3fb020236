"""``manage.py gen_durable_migrate`` and ``manage.py gen_durable_run``, through the example's
real ``manage.py`` in a subprocess (exit codes are the command line's)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _support.dbutil import DatabaseFactory
from _support.helpers import wait_status
from conftest import ROOT
from django.test import TransactionTestCase
from sqlalchemy import Engine, create_engine

from examples.django_checkout.shop.flows import Checkout, checkout_key
from examples.django_checkout.shop.models import Order
from gen_durable.contrib import django as gd
from gen_durable.store import schema

MANAGE = [sys.executable, str(ROOT / "examples" / "django_checkout" / "manage.py")]


def manage(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GEN_DURABLE_DSN": url}
    return subprocess.run(
        [*MANAGE, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def empty_database(db_factory: DatabaseFactory) -> Iterator[str]:
    name = db_factory.new_name()
    yield db_factory.create(name)
    db_factory.drop(name)


def test_migrate_installs_the_schema_in_the_projects_database(empty_database: str) -> None:
    engine = create_engine(empty_database)
    try:
        assert schema.needs_upgrade(engine)
        done = manage(empty_database, "gen_durable_migrate")
        assert done.returncode == 0, done.stderr
        assert not schema.needs_upgrade(engine)
    finally:
        engine.dispose()


def test_run_takes_the_command_lines_options(django_database: str) -> None:
    shown = manage(django_database, "gen_durable_run", "--help")
    assert shown.returncode == 0, shown.stderr
    for option in ("--queues", "--lease", "--poll-interval", "--processes", "--no-listen"):
        assert option in shown.stdout
    refused = manage(django_database, "gen_durable_run", "--lease", "-1")
    assert refused.returncode == 2
    assert "--lease" in refused.stderr


class Worker(TransactionTestCase):
    engine: Engine

    def test_the_worker_runs_the_projects_flows_until_sigterm(self) -> None:
        self.run_worker()

    def test_worker_processes_set_django_up_too(self) -> None:
        self.run_worker("--processes", "2")

    def run_worker(self, *options: str) -> None:
        url = self.engine.url.render_as_string(hide_password=False)
        worker = subprocess.Popen(
            [
                *MANAGE,
                "gen_durable_run",
                "--queues",
                "checkout=2",
                "--poll-interval",
                "0.2",
                *options,
            ],
            cwd=ROOT,
            env={**os.environ, "GEN_DURABLE_DSN": url},
        )  # its log goes to this test's captured output
        try:
            order = Order.objects.create(sku="mug", quantity=1, amount=900)
            gd.insert(Checkout, state={"order": order.id}, correlation_key=checkout_key(order.id))
            wait_status(self.engine, checkout_key(order.id), "awaiting", timeout=60)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(60)
        assert code == 0
        order.refresh_from_db()
        assert order.status == "reserved"
