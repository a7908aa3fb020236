"""What the operator commands share: the actor they are audited under, progress bars."""

from __future__ import annotations

import contextlib
import getpass
import socket
import sys
from collections.abc import Callable, Iterator

import click

Advance = Callable[[int], None]


def default_actor() -> str:
    """``user@host`` of whoever runs the command (the audit table's ``actor``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's arbitrary uid)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


actor_option = click.option(
    "--actor",
    envvar="GEN_DURABLE_ACTOR",
    show_envvar=True,
    default=default_actor,
    show_default="user@host",
    help="Who is acting, as recorded in the audit table.",
)


def interactive(as_json: bool = False) -> bool:
    """True when progress may be drawn: stdout is a terminal and no JSON was asked for."""
    return not as_json and sys.stdout.isatty()


@contextlib.contextmanager
def progress(length: int | None, label: str, *, shown: bool) -> Iterator[Advance]:
    """A click progress bar of ``length`` steps; yields the function that advances it.

    Nothing is drawn unless ``shown`` and the length is known (then the function does
    nothing), so output meant for scripts stays clean.
    """
    if not shown or length is None:
        yield _ignore
        return
    with click.progressbar(length=length, label=label, show_pos=True) as bar:
        yield bar.update


def _ignore(steps: int) -> None:
    """No progress bar: nothing to advance."""
