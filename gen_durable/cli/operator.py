"""What the operator commands share: the actor they are audited under, progress bars, the
types of their arguments and options."""

from __future__ import annotations

import contextlib
import getpass
import socket
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from gen_durable.domain import serialization
from gen_durable.errors import ValidationError

Advance = Callable[[int], None]

if TYPE_CHECKING:  # generic from click 8.2 on; the project allows click 8.1
    _TextType = click.ParamType[str]
    _LimitType = click.ParamType[int | None]
else:
    _TextType = _LimitType = click.ParamType


class Seconds(click.FloatRange):
    """A duration in seconds, up to the library's longest (100 years): click's
    ``FloatRange`` alone lets ``nan`` and ``inf`` through."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not serialization.is_seconds(seconds):
            self.fail(
                f"{value!r} is not a number of seconds up to {serialization.MAX_SECONDS:,.0f}",
                param,
                ctx,
            )
        return seconds


SECONDS = Seconds(min=0)
"""A duration in seconds, 0 allowed (``--older-than``, ``--grace``)."""
POSITIVE_SECONDS = Seconds(min=0, min_open=True)
"""A duration in seconds greater than 0 (``--lease``, ``--poll-interval``)."""


class Name(_TextType):
    """A name the database can store: non-empty, no NUL, not too long (a queue, a class)."""

    name = "name"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            return serialization.check_text(value, "the name")
        except ValidationError as exc:
            self.fail(str(exc), param, ctx)


class Limit(_LimitType):
    """A queue's concurrency limit: an int from 1 to 2**31 - 1, or ``none`` (None)."""

    name = "limit"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | None:
        if value is None or (isinstance(value, int) and serialization.is_count(value)):
            return value  # a default, already converted
        text = str(value).strip()
        if text.lower() == "none":
            return None
        if text.isdigit() and serialization.is_count(int(text)):
            return int(text)
        self.fail(
            f"expected an int from 1 to {serialization.MAX_INT32} or 'none', got {value!r}",
            param,
            ctx,
        )


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
