"""Definitions: FSM and Job base classes, the ``@step`` marker, insert specs, registry.

A class registers itself under its stable ``name`` when it is defined, so the engine,
the CLI and upgrade checks know every step of every class.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import attrs

from gen_durable import serialization
from gen_durable.errors import DefinitionError, UnknownClass, ValidationError
from gen_durable.ratelimit import RateLimit
from gen_durable.retry import Backoff, BackoffSpec
from gen_durable.types import JSON

if TYPE_CHECKING:
    from gen_durable.context import Context
    from gen_durable.outcomes import Outcome

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_QUEUE = "default"
MAX_PRIORITY = 9
"""The largest ``priority``: priorities run from 0 (claimed first) to 9."""

HistoryMode = Literal["all", "errors", "none"]
HISTORY_MODES: tuple[HistoryMode, ...] = ("all", "errors", "none")
"""What the transition history records: every transition, failing ones, or nothing."""

_registry: dict[str, type[Definition]] = {}
_RESERVED: frozenset[str] = frozenset()  # filled in below, once Definition exists


def step(func: F) -> F:
    """Mark a method as a step of its FSM (an alternative to ``steps = (...)``)."""
    func.__gd_step__ = True  # type: ignore[attr-defined]
    return func


class Definition:
    """What FSM and Job share: class options, typed state, registration."""

    name: ClassVar[str]
    """Stable registry name; defaults to ``module.QualifiedName``. Set it to survive renames."""
    queue: ClassVar[str] = DEFAULT_QUEUE
    """The queue new instances go to (``insert(queue=...)`` overrides it)."""
    priority: ClassVar[int] = 0
    """0 to 9: within a queue, lower priorities are claimed first, then older instances."""
    max_attempts: ClassVar[int] = 10
    """Attempts per step; after the last, ``on_error`` may compensate or the instance fails."""
    backoff: ClassVar[BackoffSpec] = Backoff()
    """Delay between attempts: a :class:`Backoff`, or a callable attempt -> seconds."""
    concurrency_key: ClassVar[Callable[[Any], str | None] | None] = None
    """A function of the state giving the instance's concurrency key (None: no key),
    computed at insert and again at every transition."""
    concurrency_limit: ClassVar[int] = 1
    """How many instances with one concurrency key may run at once, across all runners."""
    rate_limit: ClassVar[RateLimit | None] = None
    """A token bucket every step of the class takes from (unless ``rate_limits`` says)."""
    rate_limits: ClassVar[Mapping[str, RateLimit]] = {}
    """Per-step token buckets: ``{"charge": RateLimit(100, per=60)}``."""
    timeout: ClassVar[float | None] = None
    """Per-step timeout in seconds: past it the lease is no longer extended."""
    history: ClassVar[HistoryMode | None] = None
    """Transitions to record in ``gd_history``: "all", "errors" or "none" (None: the
    Runner's ``history`` default)."""
    abstract: ClassVar[bool] = False
    """An abstract base class is not registered and cannot be inserted."""

    _gd_steps: ClassVar[tuple[str, ...]] = ()
    _gd_initial: ClassVar[str] = ""
    _gd_state_type: ClassVar[type[Any] | None] = None
    _gd_kind: ClassVar[Literal["fsm", "job"]] = "fsm"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False) or cls.__module__ == __name__:
            return
        cls._gd_configure()
        _validate_options(cls)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        try:
            serialization.check_text(cls.name, "name")
        except ValidationError as exc:
            raise DefinitionError(f"{cls.__qualname__}: {exc}") from None
        _register(cls)

    @classmethod
    def _gd_configure(cls) -> None:
        raise NotImplementedError

    @classmethod
    def new(
        cls,
        *,
        state: Any = None,
        args: Any = None,
        correlation_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> InsertSpec:
        """Build an insert spec for ``insert_all`` (validated at once, nothing written)."""
        return InsertSpec.build(
            cls,
            state=state,
            args=args,
            correlation_key=correlation_key,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_attempts=max_attempts,
            concurrency_key=concurrency_key,
            concurrency_limit=concurrency_limit,
        )

    def step(self, name: str, ctx: Context) -> Outcome:
        """Run step ``name``; by default calls the method of that name with ``ctx``."""
        method = getattr(self, name, None)
        if method is None:
            raise DefinitionError(f"{type(self).name} has no method for step {name!r}")
        result: Outcome = method(ctx)
        return result

    def on_error(self, name: str, error: BaseException, ctx: Context) -> Outcome | None:
        """Called when step ``name`` has used its last attempt.

        Return an outcome (compensation) to continue, or None to fail the instance.
        """
        return None


_RESERVED = frozenset(name for name in dir(Definition) if not name.startswith("__"))


class FSM(Definition):
    """A durable finite-state machine.

    Name the steps with ``steps = ("start", "ship")`` (the first is the initial step
    unless ``initial`` says otherwise) or mark one method per step with ``@step``.
    Declare typed state as a nested attrs class ``State`` (or ``state_type = ...``).
    """

    steps: ClassVar[tuple[str, ...]] = ()
    """The step names, when the steps are not marked with ``@step``."""
    initial: ClassVar[str | None] = None
    """The first step of a new instance (None: the first of the steps)."""
    state_type: ClassVar[type[Any] | None] = None
    """The attrs class of the state (None: a nested ``State`` class, else plain JSON)."""

    @classmethod
    def _gd_configure(cls) -> None:
        raw = cls.__dict__.get("steps", ()) or cls.steps
        if isinstance(raw, str):
            raise DefinitionError(
                f"{cls.__qualname__}.steps is a string; write a tuple: steps = ({raw!r},)"
            )
        declared = tuple(raw)
        # The most derived definition of a name decides whether it is a step.
        marked = tuple(
            name
            for name in _member_names(cls)
            if getattr(getattr(cls, name, None), "__gd_step__", False)
        )
        if declared and marked and set(marked) - set(declared):
            extra = sorted(set(marked) - set(declared))
            raise DefinitionError(f"{cls.__qualname__}: @step methods {extra} are not in steps")
        names = declared or marked
        if not names:
            raise DefinitionError(
                f"{cls.__qualname__} declares no steps: set steps = (...) or mark methods "
                "with @step (or set abstract = True)"
            )
        for item in names:
            try:
                serialization.check_text(item, "a step name")
            except ValidationError:
                raise DefinitionError(
                    f"{cls.__qualname__}: step names are non-empty strings a text column holds"
                ) from None
            if item in _RESERVED:
                raise DefinitionError(
                    f"{cls.__qualname__}: {item!r} names an attribute of every FSM; "
                    "choose another step name"
                )
        if len(set(names)) != len(names):
            raise DefinitionError(f"{cls.__qualname__}: duplicate step names in {names}")
        initial = cls.initial or names[0]
        if initial not in names:
            raise DefinitionError(f"{cls.__qualname__}: initial step {initial!r} is not a step")
        cls._gd_steps = names
        cls._gd_initial = initial
        cls._gd_state_type = _declared_type(cls, "State", "state_type")
        cls._gd_kind = "fsm"


class Job(Definition):
    """A one-shot job: ``perform(self, args)`` or ``perform(self, args, ctx)``.

    Its return value is the result; an exception retries it with backoff. ``args`` is
    JSON, or an attrs ``Args`` class (or ``args_type = ...``).
    """

    args_type: ClassVar[type[Any] | None] = None
    """The attrs class of the args (None: a nested ``Args`` class, else plain JSON)."""
    _gd_perform_takes_ctx: ClassVar[bool] = False

    @classmethod
    def _gd_configure(cls) -> None:
        perform = getattr(cls, "perform", None)
        if perform is None or not callable(perform):
            raise DefinitionError(f"{cls.__qualname__} must define perform(self, args[, ctx])")
        signature = inspect.signature(perform).parameters.values()
        params = [p for p in signature if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if any(p.kind == p.KEYWORD_ONLY and p.default is p.empty for p in signature):
            raise DefinitionError(
                f"{cls.__qualname__}.perform takes (self, args) or (self, args, ctx); "
                "ctx is passed positionally"
            )
        if len(params) not in (2, 3):
            raise DefinitionError(
                f"{cls.__qualname__}.perform takes (self, args) or (self, args, ctx)"
            )
        cls._gd_perform_takes_ctx = len(params) == 3
        cls._gd_steps = ("perform",)
        cls._gd_initial = "perform"
        cls._gd_state_type = _declared_type(cls, "Args", "args_type")
        cls._gd_kind = "job"

    def step(self, name: str, ctx: Context) -> Any:
        """Call ``perform`` with the job's args (and ``ctx`` when it asks for it)."""
        perform: Callable[..., Any] = self.perform  # type: ignore[attr-defined]
        if self._gd_perform_takes_ctx:
            return perform(ctx.state, ctx)
        return perform(ctx.state)


@attrs.frozen
class InsertSpec:
    """One instance to insert: built by ``Cls.new(...)``, validated when built.

    It is the new row's one record, from ``Cls.new``/``insert``/``Spawn``/cron down to the
    INSERT: the storage layer takes its statement's columns from the fields marked with a
    column kind (``metadata["column"]``) and from :attr:`fsm` and :attr:`step`, so a new
    column that insert writes is one field here.
    """

    cls: type[Definition]
    state: JSON = attrs.field(metadata={"column": "jsonb"})
    correlation_key: str | None = attrs.field(metadata={"column": "text"})
    queue: str = attrs.field(metadata={"column": "text"})
    priority: int = attrs.field(metadata={"column": "int"})
    delay: float | None = attrs.field(metadata={"column": "float"})
    """Seconds from the database's now until it may run (the INSERT turns it into run_at)."""
    run_at: datetime | None = attrs.field(metadata={"column": "tsz"})
    max_attempts: int = attrs.field(metadata={"column": "int"})
    concurrency_key: str | None = attrs.field(default=None, metadata={"column": "text"})
    concurrency_limit: int | None = attrs.field(default=None, metadata={"column": "int"})
    rate_key: str | None = attrs.field(default=None, metadata={"column": "text"})
    rate_weight: float | None = attrs.field(default=None, metadata={"column": "float"})
    parent_id: int | None = attrs.field(default=None, metadata={"column": "bigint"})
    """Set by the commit of the Spawn that inserts it as a child."""
    trace_context: str | None = attrs.field(default=None, metadata={"column": "text"})
    """The span that inserted it (tracing on): its steps' spans continue that trace."""

    @property
    def fsm(self) -> str:
        """The class's registry name (the ``fsm`` column)."""
        return self.cls.name

    @property
    def step(self) -> str:
        """The step the instance starts at."""
        return self.cls._gd_initial

    @classmethod
    def build(
        cls,
        definition: type[Definition] | str,
        *,
        state: Any = None,
        args: Any = None,
        correlation_key: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> InsertSpec:
        """Validate every option and the state/args against the class's type."""
        target = resolve(definition)
        if state is not None and args is not None:
            raise ValidationError("give state= or args=, not both")
        if target._gd_kind == "job" and state is not None:
            raise ValidationError(f"{target.name} is a Job: pass args=, not state=")
        if target._gd_kind == "fsm" and args is not None:
            raise ValidationError(f"{target.name} is an FSM: pass state=, not args=")
        value = state if state is not None else args
        type_ = target._gd_state_type
        if value is None:
            value = {}  # typed: built from no fields, or InvalidState names the missing ones
        what = "args" if target._gd_kind == "job" else "state"
        data = serialization.validate_state(value, type_, what)
        if correlation_key is not None:
            serialization.check_text(correlation_key, "correlation_key")
        queue = serialization.check_text(target.queue if queue is None else queue, "queue")
        priority = target.priority if priority is None else priority
        _check_priority(priority)
        if delay is not None and run_at is not None:
            raise ValidationError("give delay= or run_at=, not both")
        if delay is not None and not serialization.is_seconds(delay):
            raise ValidationError(
                f"delay must be seconds from 0 to {serialization.MAX_SECONDS:.0f}, got {delay!r}"
            )
        if run_at is not None and not serialization.is_moment(run_at):
            raise ValidationError("run_at must be a timezone-aware datetime in years 1 to 9999")
        attempts = target.max_attempts if max_attempts is None else max_attempts
        _check_attempts(attempts)
        if concurrency_key is None:
            concurrency_key = concurrency_key_of(target, data)
        else:
            serialization.check_text(concurrency_key, "concurrency_key")
        limit = target.concurrency_limit if concurrency_limit is None else concurrency_limit
        _check_limit(limit)
        bucket = rate_bucket_of(target, target._gd_initial, data)
        return cls(
            cls=target,
            state=data,
            correlation_key=correlation_key,
            queue=queue,
            priority=priority,
            delay=float(delay) if delay is not None else None,
            run_at=run_at,
            max_attempts=attempts,
            concurrency_key=concurrency_key,
            concurrency_limit=limit if concurrency_key is not None else None,
            rate_key=bucket[0] if bucket else None,
            rate_weight=bucket[1] if bucket else None,
        )


def concurrency_key_of(cls: type[Definition], state: JSON) -> str | None:
    """The concurrency key the class's ``concurrency_key`` function gives for ``state``."""
    function = cls.__dict__.get("concurrency_key") or getattr(cls, "concurrency_key", None)
    if function is None:
        return None
    typed = serialization.structure(state, cls._gd_state_type)
    try:
        key = function(typed)
    except Exception as exc:
        raise ValidationError(f"{cls.name}.concurrency_key failed: {exc!r}") from exc
    if key is None:
        return None
    return serialization.check_text(key, f"the key {cls.name}.concurrency_key returned")


def next_concurrency_key(
    cls: type[Definition], held: str | None, before: JSON, after: JSON
) -> tuple[bool, str | None]:
    """Whether a transition from state ``before`` to ``after`` moves the instance to another
    concurrency key, and to which: (changed, key).

    Only a key the class's ``concurrency_key`` function gave is recomputed, like a rate
    limit's partition. A key given to ``insert()`` — one the function does not give for
    ``before`` — stays for the instance's whole life. Raises :class:`ValidationError` when
    the function fails on ``after``.
    """
    if getattr(cls, "concurrency_key", None) is None:
        return False, None
    try:
        derived = concurrency_key_of(cls, before) == held
    except ValidationError:  # a function that fails on the old state never gave its key
        derived = False
    if not derived:
        return False, None
    key = concurrency_key_of(cls, after)
    return key != held, key


def rate_limit_of(cls: type[Definition], step: str) -> RateLimit | None:
    """The rate limit step ``step`` of ``cls`` takes from, if any."""
    return cls.rate_limits.get(step) or cls.rate_limit


def rate_bucket_of(cls: type[Definition], step: str, state: JSON) -> tuple[str, float] | None:
    """(bucket key, weight) of step ``step`` for ``state``, or None when unlimited.

    A class-wide limit is one bucket for all steps; a per-step limit has its own. A
    partition adds a bucket per partition value.
    """
    limit = rate_limit_of(cls, step)
    if limit is None:
        return None
    typed = serialization.structure(state, cls._gd_state_type)
    scope = step if step in cls.rate_limits else "*"
    key = f"{cls.name}:{scope}:{limit.partition_of(typed)}"
    return serialization.check_text(key, "the rate limit bucket key"), limit.weight_of(typed)


def _check_limit(value: object) -> None:
    if not serialization.is_count(value):
        raise ValidationError(
            f"concurrency_limit must be an int from 1 to {serialization.MAX_INT32}, got {value!r}"
        )


def _check_priority(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PRIORITY:
        raise ValidationError(f"priority must be an int from 0 to {MAX_PRIORITY}, got {value!r}")


def _check_attempts(value: object) -> None:
    if not serialization.is_count(value):
        raise ValidationError(
            f"max_attempts must be an int from 1 to {serialization.MAX_INT32}, got {value!r}"
        )


def _validate_options(cls: type[Definition]) -> None:
    try:
        _check_priority(cls.priority)
        _check_attempts(cls.max_attempts)
        _check_limit(cls.concurrency_limit)
    except ValidationError as exc:
        raise DefinitionError(f"{cls.__qualname__}: {exc}") from None
    try:
        serialization.check_text(cls.queue, "queue")
    except ValidationError as exc:
        raise DefinitionError(f"{cls.__qualname__}: {exc}") from None
    if cls.timeout is not None and (
        not isinstance(cls.timeout, int | float)
        or not math.isfinite(cls.timeout)
        or cls.timeout <= 0
    ):
        raise DefinitionError(f"{cls.__qualname__}: timeout must be seconds > 0")
    if cls.history is not None and cls.history not in HISTORY_MODES:
        raise DefinitionError(
            f"{cls.__qualname__}: history must be one of {', '.join(HISTORY_MODES)} or None"
        )
    if cls.rate_limit is not None and not isinstance(cls.rate_limit, RateLimit):
        raise DefinitionError(f"{cls.__qualname__}: rate_limit must be a RateLimit")
    for step_name, limit in dict(cls.rate_limits).items():
        if step_name not in cls._gd_steps or not isinstance(limit, RateLimit):
            raise DefinitionError(
                f"{cls.__qualname__}: rate_limits maps steps of the class to RateLimit(...); "
                f"got {step_name!r}: {limit!r}"
            )
    if cls.concurrency_key is not None and not callable(cls.concurrency_key):
        raise DefinitionError(
            f"{cls.__qualname__}: concurrency_key must be a function of the state"
        )
    if not (isinstance(cls.backoff, Backoff) or callable(cls.backoff)):
        raise DefinitionError(f"{cls.__qualname__}: backoff must be a Backoff or a callable")


def _declared_type(cls: type[Definition], nested: str, option: str) -> type[Any] | None:
    explicit = getattr(cls, option, None)
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    candidate = getattr(cls, nested, None)
    if candidate is not None and not attrs.has(candidate):
        raise DefinitionError(f"{cls.__qualname__}.{nested} must be an attrs class")
    return candidate


def _member_names(cls: type) -> Iterator[str]:
    """Attribute names of a class and its bases, base classes' first, each once."""
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            if name not in seen:
                seen.add(name)
                yield name


def _register(cls: type[Definition]) -> None:
    existing = _registry.get(cls.name)
    if (
        existing is not None
        and existing is not cls
        and (
            existing.__module__,
            existing.__qualname__,
        )
        != (cls.__module__, cls.__qualname__)
    ):
        raise DefinitionError(
            f"registry name {cls.name!r} is taken by {existing.__module__}.{existing.__qualname__}"
        )
    _registry[cls.name] = cls


def resolve(definition: type[Definition] | str) -> type[Definition]:
    """The registered class for a class or registry name; raises :class:`UnknownClass`."""
    if isinstance(definition, str):
        found = _registry.get(definition)
        if found is None:
            raise UnknownClass(f"no FSM or Job is registered as {definition!r}")
        return found
    if not isinstance(definition, type) or not issubclass(definition, Definition):
        raise UnknownClass(f"{definition!r} is not an FSM or Job class")
    name = getattr(definition, "name", None)
    if name is None or _registry.get(name) is not definition:
        raise UnknownClass(f"{definition.__qualname__} is not a registered FSM or Job")
    return definition


def lookup(name: str) -> type[Definition] | None:
    """The class registered under ``name``, or None."""
    return _registry.get(name)


def registered() -> dict[str, type[Definition]]:
    """A copy of the registry: name -> class."""
    return dict(_registry)
