"""Recurring work: cron schedules, parsed and evaluated by the maintained ``cronsim``.

Time zones come from the standard ``zoneinfo`` database. Across daylight-saving changes a
local time that does not exist fires at the next valid moment, and a fixed local time in
a repeated hour fires once (``cronsim`` follows cron's own rules).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from gen_durable.domain import serialization
from gen_durable.domain.definitions import Definition, resolve
from gen_durable.domain.insert_spec import InsertSpec
from gen_durable.errors import ValidationError

CatchUp = Literal["skip", "last"]


@attrs.frozen(init=False)
class Cron:
    """Insert an instance of ``cls`` at every tick of ``expression`` (5-field cron).

    Exactly one instance per tick across all runners: only the leader fires, and each
    tick is recorded under a unique key, so a stale leader's attempt does nothing.
    Ticks missed by less than ``grace`` seconds (a leadership hand-over, a restart) still
    fire, each once. Older ticks — a long time with no runner at all — follow
    ``catch_up``: ``"skip"`` drops them, ``"last"`` runs the newest of them once.

    Args:
        expression: A 5-field cron expression (minute hour day-of-month month
            day-of-week), e.g. ``"*/5 * * * *"``.
        cls: The FSM or Job class (or its registry name) to insert at each tick.
        state: The state of each new FSM instance.
        args: The args of each new Job instance.
        timezone: The IANA time zone the expression is read in.
        name: The schedule's unique name, under which its ticks are recorded; None:
            ``"<registry name>@<expression>@<timezone>"``.
        catch_up: What happens to ticks missed by more than ``grace``: ``"skip"`` drops
            them, ``"last"`` runs the newest of them once.
        grace: Seconds a missed tick may be late and still fire.
        queue: The queue of the new instances; None: the class's.
        priority: The priority of the new instances; None: the class's.
    """

    expression: str
    cls: type[Definition]
    spec: InsertSpec
    timezone: str
    name: str
    catch_up: CatchUp
    grace: float

    def __init__(
        self,
        expression: str,
        cls: type[Definition] | str,
        *,
        state: Any = None,
        args: Any = None,
        timezone: str = "UTC",
        name: str | None = None,
        catch_up: CatchUp = "skip",
        grace: float = 300.0,
        queue: str | None = None,
        priority: int | None = None,
    ) -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise ValidationError("a cron expression is a non-empty string")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError, OSError) as exc:
            # OSError: a name too long to be a file of the time zone database.
            raise ValidationError(f"unknown time zone {timezone!r:.80}") from exc
        try:
            CronSim(expression, datetime.now(zone))
        except CronSimError as exc:
            raise ValidationError(f"malformed cron expression {expression!r:.80}: {exc}") from exc
        if catch_up not in ("skip", "last"):
            raise ValidationError(f"catch_up must be 'skip' or 'last', got {catch_up!r}")
        if not serialization.is_seconds(grace):
            raise ValidationError(
                f"grace must be seconds from 0 to {serialization.MAX_SECONDS:.0f}, got {grace!r}"
            )
        target = resolve(cls)
        spec = InsertSpec.build(target, state=state, args=args, queue=queue, priority=priority)
        if name is not None:
            serialization.check_text(name, "name")
        label = name or f"{target.name}@{expression}@{timezone}"
        serialization.check_text(label, "the schedule's name (pass a shorter name=)")
        self.__attrs_init__(expression, target, spec, timezone, label, catch_up, float(grace))

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Tick times in ``(after, until]``, as timezone-aware UTC datetimes."""
        zone = ZoneInfo(self.timezone)
        for tick in CronSim(self.expression, after.astimezone(zone)):
            if tick > until:
                return
            if tick > after:
                yield tick.astimezone(UTC)

    def due(self, last: datetime | None, now: datetime) -> list[datetime]:
        """The ticks to fire now, given the last recorded tick (None: never fired).

        Ticks within ``grace`` of ``now`` all fire; older ones follow ``catch_up``. A
        schedule that never fired starts with its latest tick within ``grace``, if any.
        """
        horizon = now.timestamp() - self.grace
        if last is None:  # a new schedule fires its latest tick within grace, if any
            latest = list(self.ticks(datetime.fromtimestamp(horizon, UTC), now))[-1:]
            return latest
        missed = list(self.ticks(last, now))
        recent = [t for t in missed if t.timestamp() >= horizon]
        old = [t for t in missed if t.timestamp() < horizon]
        if old and self.catch_up == "last":
            return [old[-1], *recent]
        return recent
