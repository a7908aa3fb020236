"""The class registry: every FSM and Job under its stable name.

A class registers itself when it is defined (:mod:`gen_durable.domain.definitions`). The
modules below the definitions — insert specs, routing — see a registered class through
:class:`Definable`, what they read of it, so that none of them imports the definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from gen_durable.errors import DefinitionError, UnknownClass


class Definable(Protocol):
    """What insert specs and routing read of a registered class (its class options)."""

    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def concurrency_key(self) -> Callable[[Any], str | None] | None: ...
    @property
    def concurrency_limit(self) -> int: ...
    @property
    def rate_limit(self) -> Any: ...
    @property
    def rate_limits(self) -> Mapping[str, Any]: ...
    @property
    def _gd_initial(self) -> str: ...
    @property
    def _gd_state_type(self) -> type[Any] | None: ...
    @property
    def _gd_kind(self) -> Literal["fsm", "job"]: ...


_registry: dict[str, Definable] = {}


def register(cls: Definable) -> None:
    """Register ``cls`` under its name; a name taken by another class raises."""
    existing = _registry.get(cls.name)
    if existing is not None and existing is not cls and _origin(existing) != _origin(cls):
        where = ".".join(_origin(existing))
        raise DefinitionError(f"registry name {cls.name!r} is taken by {where}")
    _registry[cls.name] = cls


def _origin(cls: object) -> tuple[str, str]:
    return getattr(cls, "__module__", ""), getattr(cls, "__qualname__", "")


def resolve(definition: Definable | str) -> Definable:
    """The registered class for a class or registry name; raises :class:`UnknownClass`."""
    if isinstance(definition, str):
        found = _registry.get(definition)
        if found is None:
            raise UnknownClass(f"no FSM or Job is registered as {definition!r}")
        return found
    if not isinstance(definition, type) or not hasattr(definition, "_gd_kind"):
        raise UnknownClass(f"{definition!r} is not an FSM or Job class")
    name = getattr(definition, "name", None)
    if name is None or _registry.get(name) is not definition:
        raise UnknownClass(f"{definition.__qualname__} is not a registered FSM or Job")
    return definition


def lookup(name: str) -> Definable | None:
    """The class registered under ``name``, or None."""
    return _registry.get(name)


def registered() -> dict[str, Definable]:
    """A copy of the registry: name -> class."""
    return dict(_registry)


def forget(name: str) -> None:
    """Unregister ``name`` (tests that define many classes)."""
    _registry.pop(name, None)
