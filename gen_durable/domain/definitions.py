"""Definitions: the FSM and Job base classes and the ``@step`` marker.

A class registers itself under its stable ``name`` when it is defined
(:mod:`gen_durable.domain.registry`), so the engine, the CLI and upgrade checks know every
step of every class.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar, Unpack, get_args, get_origin

import attrs

from gen_durable.domain import registry, serialization, versioning
from gen_durable.domain.context import Context, S
from gen_durable.domain.insert_spec import InsertOptions, InsertSpec
from gen_durable.domain.options import (
    DEFAULT_QUEUE,
    HISTORY_MODES,
    HistoryMode,
    check_attempts,
    check_limit,
    check_priority,
)
from gen_durable.domain.outcomes import Outcome
from gen_durable.domain.ratelimit import RateLimit
from gen_durable.domain.retry import Backoff, BackoffSpec
from gen_durable.errors import DefinitionError, ValidationError

F = TypeVar("F", bound=Callable[..., Any])

_RESERVED: frozenset[str] = frozenset()  # filled in below, once Definition exists


class ConcurrencyKey(Protocol):
    """A function of the state (or args) giving an instance's concurrency key, or None."""

    def __call__(self, state: Any, /) -> str | None: ...


def step(func: F) -> F:
    """Mark a method as a step of its FSM (an alternative to ``steps = (...)``)."""
    func.__gd_step__ = True  # type: ignore[attr-defined]
    return func


class Definition(Generic[S]):
    """What FSM and Job share: class options, typed state, registration.

    ``S`` is the state's type as step code sees it in ``ctx.state`` (``Any`` when not
    given); it is for type checkers only: the class's ``State``/``Args`` or ``state_type``
    decides what is loaded.
    """

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
    concurrency_key: ClassVar[ConcurrencyKey | None] = None
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
    state_version: ClassVar[int] = 1
    """The version of the state's JSON this code writes; older rows are upgraded on load by
    the ``@upgrades_state(from_version=k)`` functions (see :mod:`gen_durable.domain.versioning`)."""
    step_aliases: ClassVar[Mapping[str, str]] = {}
    """Old step names mapped to declared steps: rows at a renamed or removed step run on."""
    _gd_upgrades: ClassVar[dict[int, versioning.Upgrade]] = {}
    _gd_known_versions: ClassVar[tuple[int, ...]] = (1,)

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
        versioning.configure(cls)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        try:
            serialization.check_text(cls.name, "name")
        except ValidationError as exc:
            raise DefinitionError(f"{cls.__qualname__}: {exc}") from None
        registry.register(cls)

    @classmethod
    def _gd_configure(cls) -> None:
        raise NotImplementedError

    @classmethod
    def new(cls, **options: Unpack[InsertOptions]) -> InsertSpec:
        """Build an insert spec for ``insert_all`` (validated at once, nothing written).

        Takes the options of :func:`gen_durable.insert` that concern the instance
        itself (:class:`~gen_durable.domain.insert_spec.InsertOptions`).
        """
        return InsertSpec.build(cls, **options)

    def step(self, name: str, ctx: Context[S]) -> Outcome:
        """Run step ``name``; by default calls the method of that name with ``ctx``."""
        method = getattr(self, name, None)
        if method is None:
            raise DefinitionError(f"{type(self).name} has no method for step {name!r}")
        result: Outcome = method(ctx)
        return result

    def on_error(self, name: str, error: BaseException, ctx: Context[S]) -> Outcome | None:
        """Called when step ``name`` has used its last attempt.

        Return an outcome (compensation) to continue, or None to fail the instance.
        """
        return None


_RESERVED = frozenset(name for name in dir(Definition) if not name.startswith("__"))


class FSM(Definition[S]):
    """A durable finite-state machine.

    Name the steps with ``steps = ("start", "ship")`` (the first is the initial step
    unless ``initial`` says otherwise) or mark one method per step with ``@step``.
    Declare typed state as a nested attrs class ``State`` (or ``state_type = ...``).

    For type checkers, ``class Checkout(FSM[CheckoutState])`` types ``ctx.state`` in
    ``step(self, name, ctx: Context[CheckoutState])``; with a nested ``State`` write
    ``class Checkout(FSM)`` and annotate ``ctx: Context["Checkout.State"]`` in the steps.
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


class Job(Definition[S]):
    """A one-shot job: ``perform(self, args)`` or ``perform(self, args, ctx)``.

    Its return value is the result; an exception retries it with backoff. ``args`` is
    JSON, or an attrs ``Args`` class (or ``args_type = ...``).

    For type checkers, ``class Charge(Job[ChargeArgs])`` with
    ``perform(self, args: ChargeArgs, ctx: Context[ChargeArgs])``.
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

    def step(self, name: str, ctx: Context[S]) -> Any:
        """Call ``perform`` with the job's args (and ``ctx`` when it asks for it)."""
        perform: Callable[..., Any] = self.perform  # type: ignore[attr-defined]
        if self._gd_perform_takes_ctx:
            return perform(ctx.state, ctx)
        return perform(ctx.state)


def _validate_options(cls: type[Definition]) -> None:
    try:
        check_priority(cls.priority)
        check_attempts(cls.max_attempts)
        check_limit(cls.concurrency_limit)
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
    return candidate if candidate is not None else _type_argument(cls)


def _type_argument(cls: type[Definition]) -> type[Any] | None:
    """The attrs class named in the nearest ``FSM[...]``/``Job[...]`` base, if any: what
    type checkers take ``ctx.state`` to be is what is loaded (anything else is JSON)."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Definition):
                found = get_args(base)[0]
                return found if isinstance(found, type) and attrs.has(found) else None
    return None


def _member_names(cls: type) -> Iterator[str]:
    """Attribute names of a class and its bases, base classes' first, each once."""
    seen: set[str] = set()
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            if name not in seen:
                seen.add(name)
                yield name


def resolve(definition: type[Definition] | str) -> type[Definition]:
    """The registered class for a class or registry name; raises :class:`UnknownClass`."""
    return _defined(registry.resolve(definition))


def lookup(name: str) -> type[Definition] | None:
    """The class registered under ``name``, or None."""
    found = registry.lookup(name)
    return None if found is None else _defined(found)


def registered() -> dict[str, type[Definition]]:
    """A copy of the registry: name -> class."""
    return {name: _defined(cls) for name, cls in registry.registered().items()}


def _defined(cls: object) -> type[Definition]:
    # Only Definition subclasses register themselves: this narrows the registry's view.
    assert isinstance(cls, type) and issubclass(cls, Definition)
    return cls
