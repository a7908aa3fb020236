"""Versioned state and step aliases: what lets new code run rows written by old code.

A class declares ``state_version = N`` and one upgrade function per older version
(``@upgrades_state(from_version=k)``: the JSON of version k in, the JSON of version k + 1
out); a row is upgraded on load, on its raw JSON, before the strict typed load, and
written back in the code's version at its next commit. ``step_aliases = {"old": "new"}``
maps rows parked or scheduled on a step that was renamed or removed.

The versions a class *knows* are its own and every older one from which a complete
chain of upgrade functions leads to it: a runner claims only rows of those versions, at
steps its class declares or aliases (see :func:`claim_keys`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from gen_durable.domain import serialization
from gen_durable.errors import DefinitionError, DurableError, ValidationError
from gen_durable.types import JSON

F = TypeVar("F", bound=Callable[..., Any])
Upgrade = Callable[[Any], Any]

SEP = "\x1f"
"""Between a class's name and a step or version in the claim's keys (a unit separator:
no step name or registry name is expected to hold it)."""


class StateUpgradeFailed(DurableError):
    """An upgrade function raised, or its result does not load as the class's state.

    The row keeps its old JSON and ``state_version``; a runner parks it (unfinished, not
    claimed again) with this error stored, until an operator runs ``gen-durable
    upgrade-state`` with fixed code or moves it.
    """

    def __init__(self, message: str, *, from_version: int, to_version: int) -> None:
        super().__init__(message)
        self.from_version = from_version
        self.to_version = to_version


Versioned = Any
"""A definition class (``FSM``/``Job`` subclass): typed loosely, as the definitions
module sits above this one."""


def upgrades_state(*, from_version: int) -> Callable[[F], F]:
    """Mark a function of the class body as the upgrade of the state's JSON from version
    ``from_version`` to ``from_version + 1``.

    The function takes the JSON (a dict for an object state) and returns the JSON of the
    next version; it is called without ``self`` (write it as a plain function or a
    ``staticmethod``), before the state is structured into the class's ``State`` type.
    """
    if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
        raise DefinitionError(
            f"upgrades_state(from_version=...) takes an int >= 1, got {from_version!r}"
        )

    def mark(func: F) -> F:
        target = func.__func__ if isinstance(func, staticmethod) else func
        target.__gd_upgrade_from__ = from_version  # type: ignore[attr-defined]
        return func

    return mark


def configure(cls: Any) -> None:
    """Check a class's ``state_version``, upgrade functions and ``step_aliases``, and
    record what the engine reads on its hot path (``_gd_upgrades``, ``_gd_known_versions``,
    ``_gd_aliases``)."""
    where = cls.__qualname__
    version = cls.state_version
    if isinstance(version, bool) or not serialization.is_count(version):
        raise DefinitionError(f"{where}: state_version must be an int >= 1, got {version!r}")
    upgrades: dict[int, Upgrade] = {}
    for klass in reversed(cls.__mro__):
        for value in vars(klass).values():
            func = value.__func__ if isinstance(value, staticmethod) else value
            start = getattr(func, "__gd_upgrade_from__", None)
            if start is None:
                continue
            if start >= version:
                raise DefinitionError(
                    f"{where}: upgrades_state(from_version={start}) is not below "
                    f"state_version = {version}"
                )
            upgrades[start] = func
    oldest = version
    while oldest - 1 in upgrades:
        oldest -= 1
    cls._gd_upgrades = upgrades
    cls._gd_known_versions = tuple(range(oldest, version + 1))
    aliases = cls.step_aliases
    if not isinstance(aliases, Mapping):
        raise DefinitionError(
            f"{where}: step_aliases maps old step names to steps: {{'old': 'new'}}"
        )
    for old, new in aliases.items():
        try:
            serialization.check_text(old, "a step alias")
        except ValidationError as exc:
            raise DefinitionError(f"{where}: {exc}") from None
        if old in cls._gd_steps:
            raise DefinitionError(f"{where}: step alias {old!r} is a step of the class")
        if new not in cls._gd_steps:
            raise DefinitionError(f"{where}: step alias {old!r} -> {new!r}: no step {new!r}")


def upgrade(cls: Versioned, data: JSON, from_version: int) -> JSON:
    """The JSON of version ``from_version`` upgraded to the class's ``state_version``,
    then checked to load as its state. Raises :class:`StateUpgradeFailed`."""
    target = cls.state_version
    if from_version not in cls._gd_known_versions:
        raise StateUpgradeFailed(
            f"{cls.name} has no upgrade from state version {from_version} "
            f"(its code knows versions {_span(cls._gd_known_versions)})",
            from_version=from_version,
            to_version=target,
        )
    for k in range(from_version, target):
        try:
            data = cls._gd_upgrades[k](data)
            serialization.dumps(data)
        except Exception as exc:
            raise StateUpgradeFailed(
                f"upgrade of {cls.name} state from version {k} to {k + 1} raised "
                f"{type(exc).__name__}: {exc}",
                from_version=from_version,
                to_version=target,
            ) from exc
    what = "args" if cls._gd_kind == "job" else "state"
    try:
        serialization.structure(data, cls._gd_state_type, what)
    except Exception as exc:
        raise StateUpgradeFailed(
            f"{cls.name} {what} upgraded from version {from_version} to {target} does not "
            f"load: {type(exc).__name__}: {exc}",
            from_version=from_version,
            to_version=target,
        ) from exc
    return data


def resolve_step(cls: Versioned, step: str) -> str | None:
    """The declared step a row at ``step`` runs (through ``step_aliases``); None when the
    class neither declares nor aliases it."""
    if step in cls._gd_steps:
        return step
    new: str | None = cls.step_aliases.get(step)
    return new


def error_json(exc: StateUpgradeFailed, step: str) -> dict[str, Any]:
    """The error stored on a parked row (``show`` and ``why`` display it)."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "step": step,
        "upgrade": {"from_version": exc.from_version, "to_version": exc.to_version},
    }


def is_upgrade_error(error: Any) -> bool:
    """True for the error of a row parked by a failing upgrade."""
    return isinstance(error, dict) and isinstance(error.get("upgrade"), dict)


def claim_keys(classes: list[Versioned]) -> tuple[list[str], list[str]]:
    """The claim's filter for a runner's classes: ``name SEP step`` for each declared or
    aliased step, and ``name SEP version`` for each known state version."""
    steps = [f"{c.name}{SEP}{s}" for c in classes for s in (*c._gd_steps, *c.step_aliases)]
    versions = [f"{c.name}{SEP}{v}" for c in classes for v in c._gd_known_versions]
    return steps, versions


def known(classes: list[Versioned]) -> dict[str, dict[str, list[Any]]]:
    """What a runner's node row records: per class, the state versions and the steps
    (declared and aliased) its code knows."""
    return {
        c.name: {
            "versions": list(c._gd_known_versions),
            "steps": [*c._gd_steps, *c.step_aliases],
        }
        for c in classes
    }


def _span(versions: tuple[int, ...]) -> str:
    return str(versions[0]) if len(versions) == 1 else f"{versions[0]} to {versions[-1]}"
