"""Typed errors raised by gen_durable.

Every error a caller can act on derives from :class:`DurableError`. Bad input to the
client API raises one of these *before* anything is written.
"""

from __future__ import annotations


class DurableError(Exception):
    """Base class of every error gen_durable raises on purpose."""


class ConfigurationError(DurableError):
    """A Runner, engine or class option is invalid (e.g. a pool too small)."""


class DefinitionError(DurableError):
    """An FSM or Job class is declared incorrectly (unknown step, bad option, name clash)."""


class ValidationError(DurableError, ValueError):
    """Input to the API is invalid; nothing was written."""


class UnknownClass(ValidationError):
    """A class or registry name is not a registered FSM or Job."""


class InvalidState(ValidationError):
    """State or args do not structure into the class's declared type."""


class InvalidPayload(ValidationError):
    """A payload, state or result is not JSON-serialisable, or not storable as jsonb."""


class PayloadTooLarge(InvalidPayload):
    """A payload, state, args or result is over the payload limit (default 1 MiB).

    ``size`` and ``limit`` are in bytes of compact UTF-8 JSON; see
    :func:`gen_durable.serialization.set_payload_limit`.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes of JSON, over the payload limit of {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class NotFound(DurableError, LookupError):
    """No instance matches the given id or correlation key."""


class DuplicateInstance(DurableError):
    """An unfinished instance with this correlation key exists (``on_conflict="raise"``)."""

    def __init__(self, correlation_key: str, existing_id: int) -> None:
        super().__init__(
            f"an unfinished instance with correlation key {correlation_key!r} exists "
            f"(id {existing_id})"
        )
        self.correlation_key = correlation_key
        self.existing_id = existing_id


class InvalidTransition(DurableError):
    """An operation does not apply to the instance in its current status."""


class InvalidOutcome(DurableError):
    """A step returned something that is not a valid outcome for its class."""


class RateLimitedError(DurableError):
    """Raise it from a step when a remote API refused for now (same as ``RateLimited``)."""

    def __init__(self, retry_after: float, message: str = "rate limited") -> None:
        super().__init__(f"{message}; retry after {retry_after} s")
        self.retry_after = retry_after


class ResultTimeout(DurableError, TimeoutError):
    """The awaited instance did not finish within the timeout."""


class InstanceFailed(DurableError):
    """The awaited instance finished as failed or cancelled."""

    def __init__(self, instance_id: int, status: str, error: object) -> None:
        super().__init__(f"instance {instance_id} finished {status}: {error}")
        self.instance_id = instance_id
        self.status = status
        self.error = error


def shown(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages and logs name a bad
    value without carrying a whole payload."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
