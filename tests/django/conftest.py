"""Django for the tests of ``gen_durable.contrib.django`` and examples/django_checkout.

The example project's settings, on one database per session cloned from the suite's
template (gen_durable's schema installed) and migrated for the project's own apps. Test
classes are Django's ``TestCase`` (each test in a transaction rolled back after it) and
``TransactionTestCase`` (real commits; Django flushes its own tables after each test, and
``durable_engine`` empties gen_durable's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import django
import pytest
from _support.dbutil import DatabaseFactory
from sqlalchemy import Engine, create_engine

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:  # the examples are not installed: import them from the checkout
    sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "examples.django_checkout.settings"
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.test.utils import setup_test_environment, teardown_test_environment  # noqa: E402

from examples.django_checkout.settings import database  # noqa: E402
from gen_durable.testing import reset  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def django_database(db_factory: DatabaseFactory) -> Iterator[str]:
    """The project's database (its SQLAlchemy URL): Django's ``default`` points at it."""
    name = db_factory.prefix + "django"
    url = db_factory.create(name, template=db_factory.template)
    # In place: Django's connection objects hold this dict; none has connected yet.
    settings.DATABASES["default"].update(database(url))
    call_command("migrate", verbosity=0, interactive=False)
    setup_test_environment()  # as Django's runner does: responses keep their context
    yield url
    teardown_test_environment()
    connections.close_all()
    db_factory.drop(name)


@pytest.fixture(scope="session")
def durable_engine(django_database: str) -> Iterator[Engine]:
    """A SQLAlchemy engine on the project's database: a worker's, and to look from outside."""
    engine = create_engine(django_database)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _engine_for_test_classes(request: pytest.FixtureRequest, durable_engine: Engine) -> None:
    """``self.engine`` in test classes; gen_durable's tables emptied after a committing test."""
    if request.instance is not None:
        request.instance.engine = durable_engine
    request.addfinalizer(lambda: reset(durable_engine))
