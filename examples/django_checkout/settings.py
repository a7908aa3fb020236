"""The shop's Django settings: its database is ``GEN_DURABLE_DSN``'s (``gen-durable dev``
prints one); every request is one transaction (``ATOMIC_REQUESTS``)."""

from __future__ import annotations

import os
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from gen_durable.devserver import ENV_DSN


def database(dsn: str) -> dict[str, Any]:
    """A ``DATABASES`` entry for a libpq URL (``postgresql://user:pw@host:port/name``)."""
    params = conninfo_to_dict(dsn.replace("postgresql+psycopg://", "postgresql://", 1))
    return {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3
        "NAME": params.get("dbname", ""),
        "USER": params.get("user", ""),
        "PASSWORD": params.get("password", ""),
        "HOST": params.get("host", ""),
        "PORT": params.get("port", ""),
        "ATOMIC_REQUESTS": True,  # the order and its checkout commit together, or neither
    }


DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "an example's key: set your own")
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
ROOT_URLCONF = "examples.django_checkout.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": database(os.environ.get(ENV_DSN, "postgresql:///shop"))}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "gen_durable.contrib.django",  # the client functions, the commands, the admin
    "examples.django_checkout.shop",
]

GEN_DURABLE = {
    # The shop's flows are in shop/flows.py: the app imports every app's "flows" module.
    "MODULES": ["flows"],
    "DASHBOARD_URL": os.environ.get("GEN_DURABLE_DASHBOARD_URL"),
}

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "static/"
