"""How ``explain()`` words its facts: attempts, errors, moments, spans, names and ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from gen_durable.store.instances import InstanceRecord
from gen_durable.types import JSON, Status

__all__ = [
    "FINISHED",
    "attempt",
    "awaited",
    "error_text",
    "ids_text",
    "quoted",
    "resumes",
    "span",
    "when",
]


def attempt(row: InstanceRecord) -> str:
    """``attempt N of M``."""
    return f"attempt {row.attempt} of {row.max_attempts}"


def error_text(error: JSON) -> str:
    """A stored error as ``Type: message``."""
    if isinstance(error, dict):
        kind = error.get("type") or "error"
        message = error.get("message")
        return f"{kind}: {message}" if message else str(kind)
    return "no recorded error" if error is None else str(error)


def when(moment: datetime | None, now: datetime) -> str:
    """``at <ISO time> (in 5m 2s)`` or ``(… ago)``, relative to ``now``."""
    if moment is None:
        return "(no time recorded)"
    seconds = (moment - now).total_seconds()
    stamp = moment.isoformat(timespec="seconds")
    if abs(seconds) < 1:
        return f"at {stamp} (now)"
    spent = span(abs(seconds))
    return f"at {stamp} (in {spent})" if seconds > 0 else f"at {stamp} ({spent} ago)"


def span(seconds: float) -> str:
    """Seconds as ``1d 2h 3m 4s`` (whole seconds, zero parts left out)."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else ""]
    parts += [f"{minutes}m" if minutes else "", f"{secs}s" if secs or whole == 0 else ""]
    return " ".join(p for p in parts if p)


def quoted(names: Sequence[str]) -> str:
    """Names as ``'a', 'b'``."""
    return ", ".join(repr(n) for n in names)


def ids_text(ids: Sequence[int], total: int) -> str:
    """``instance 1, 2 and 3 more`` (of ``total``)."""
    shown = "instance " + ", ".join(str(i) for i in ids) if ids else "no unfinished child found"
    return shown + (f" and {total - len(ids)} more" if total > len(ids) and ids else "")


FINISHED: dict[Status, Callable[[InstanceRecord, str], str]] = {
    Status.DONE: lambda row, when: f"done {when}, at step {row.step!r}.",
    Status.CANCELLED: lambda row, when: f"cancelled {when} ({error_text(row.error)}).",
    Status.FAILED: lambda row, when: (
        f"failed {when} at step {row.step!r} after {attempt(row)}, with {error_text(row.error)}."
    ),
}
"""How each finished status ends the sentence "is finished: ...", given when it finished."""


def awaited(row: InstanceRecord) -> str:
    """The signals of the ``Await`` a row is parked at: ``'a', 'b'`` or ``all of 'a', 'b'``."""
    names = tuple(row.await_names or ())
    return f"all of {quoted(names)}" if row.await_all and len(names) > 1 else quoted(names)


def resumes(row: InstanceRecord, at: datetime) -> tuple[str, ...]:
    """Where a retry would resume a cancelled instance, when not at once (a note)."""
    if row.await_names is not None and row.await_pack is None:
        return (f"A retry resumes its wait for signal {awaited(row)}.",)
    if row.run_at is not None and row.run_at > at:
        return (f"A retry resumes it scheduled, due {when(row.run_at, at)}.",)
    return ()
