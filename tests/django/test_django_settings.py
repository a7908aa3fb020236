"""``GEN_DURABLE`` and the worker's URL from ``DATABASES``."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from gen_durable.contrib.django.settings import database_url, entry_url, options

BASE: dict[str, Any] = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop"}


def url_of(**entry: Any) -> str:
    return entry_url({**BASE, **entry}, "default").render_as_string(hide_password=False)


def test_defaults_and_unknown_keys() -> None:
    with override_settings(GEN_DURABLE=None):
        assert options() == {
            "DATABASE": "default",
            "SCHEMA": None,
            "MODULES": ("flows",),
            "DASHBOARD_URL": None,
        }
    with (
        override_settings(GEN_DURABLE={"DATABSE": "x"}),
        pytest.raises(ImproperlyConfigured, match="unknown keys \\['DATABSE'\\]"),
    ):
        options()


def test_the_url_of_a_databases_entry() -> None:
    assert url_of(USER="app", PASSWORD="s3cr:t", HOST="db", PORT="5433") == (
        "postgresql+psycopg://app:s3cr%3At@db:5433/shop"
    )
    # a socket directory is libpq's host= parameter; Django's own options are left out
    assert url_of(
        HOST="/run/pg", OPTIONS={"sslmode": "disable", "pool": True, "prepare_threshold": 5}
    ) == ("postgresql+psycopg:///shop?host=%2Frun%2Fpg&sslmode=disable")


def test_only_the_psycopg_backend_and_known_aliases() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"must use django\.db\.backends\.postgresql"):
        url_of(ENGINE="django.db.backends.sqlite3")
    with pytest.raises(ImproperlyConfigured, match="no database 'other'"):
        database_url("other")
