"""``manage.py gen_durable_run``: ``gen-durable run`` on the project's database."""

from __future__ import annotations

from gen_durable.contrib.django.management.forward import Forward

BOOT = "gen_durable.contrib.django.boot"


class Command(Forward):
    help = "Run a worker (gen-durable run, with the same options; see --help)."
    command = "run"

    def preset(self) -> list[str]:
        # Worker processes started by --processes set Django up too, which imports the
        # apps' flow modules.
        return [*super().preset(), "--import", BOOT]
