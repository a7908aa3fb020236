"""A management command that is a ``gen-durable`` command on the project's database.

The options are the command line's own (``manage.py gen_durable_run --help`` lists them):
the arguments go to the click command unchanged, with ``--dsn`` made from ``DATABASES``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gen_durable.cli import main as cli
from gen_durable.contrib.django.settings import database_url


class Forward(BaseCommand):
    """Runs ``gen-durable <command> --dsn <the project's database> <arguments>``."""

    command: str
    """The ``gen-durable`` subcommand."""

    def preset(self) -> list[str]:
        """Options placed before the user's arguments (a later one given twice wins)."""
        url = database_url().render_as_string(hide_password=False)
        return ["--dsn", url]

    def arguments(self, given: Sequence[str]) -> list[str]:
        return [self.command, *self.preset(), *given]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, help="see --help")

    def run_from_argv(self, argv: list[str]) -> None:
        # From the shell, the command line parses everything itself, --help included, and
        # exits with its own codes (2 for a usage error, 3 for an unreachable database).
        name = f"{os.path.basename(argv[0])} {argv[1]}"
        cli.main(args=self.arguments(argv[2:]), prog_name=name)

    def handle(self, *args: str, **options: Any) -> None:
        """For ``call_command``: the same, with click's errors as ``CommandError``."""
        try:
            cli.main(args=self.arguments(args), prog_name=self.command, standalone_mode=False)
        except click.ClickException as exc:
            raise CommandError(exc.format_message(), returncode=exc.exit_code) from exc
