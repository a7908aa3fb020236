"""``manage.py gen_durable_migrate``: ``gen-durable migrate`` on the project's database
(in ``GEN_DURABLE["SCHEMA"]``, which the app configured at start-up)."""

from __future__ import annotations

from gen_durable.contrib.django.management.forward import Forward


class Command(Forward):
    help = "Install or upgrade the gen_durable schema (gen-durable migrate; see --help)."
    command = "migrate"
