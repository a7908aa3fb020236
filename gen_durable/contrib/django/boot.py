"""Imported by the workers of ``manage.py gen_durable_run``: sets Django up (from
``DJANGO_SETTINGS_MODULE``), so the apps' flow modules are imported and their classes
registered; a no-op where Django is set up already."""

from __future__ import annotations

import django
from django.apps import apps

if not apps.ready:
    django.setup()
