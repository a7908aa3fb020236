"""The Django app: configures the schema and imports the apps' flow modules at start-up."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules

from gen_durable.contrib.django.settings import options
from gen_durable.store.models import configure_schema


class GenDurableConfig(AppConfig):
    """``INSTALLED_APPS = [..., "gen_durable.contrib.django"]``."""

    name = "gen_durable.contrib.django"
    label = "gen_durable"
    verbose_name = "Durable flows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        opts = options()
        if opts["SCHEMA"]:
            configure_schema(opts["SCHEMA"])
        # Like the admin's admin.py: every app's flows module defines (registers) its
        # classes, so the worker and the client know them by name.
        autodiscover_modules(*opts["MODULES"])
