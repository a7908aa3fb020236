"""Collecting every statement gen_durable builds or sends (for the statement guard).

:func:`prebuilt` finds the statements built once at import (module attributes);
:class:`Capture` records the SQL a workload sends — through SQLAlchemy's
``before_cursor_execute`` and, for the hot statements that bypass ``Connection.execute``,
what :mod:`gen_durable.store._fast` renders — and which storage function sent it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import CompoundSelect, Select

import gen_durable
from gen_durable import store
from gen_durable.store import _fast, models

_DIALECT = pg_dialect.dialect()  # type: ignore[no-untyped-call]
_PLUMBING = {"gen_durable.store._common", "gen_durable.store._fast"}


def modules() -> Iterator[Any]:
    """Every module of gen_durable but the migrations (importing their env runs alembic)
    and the framework integrations (they import only in a configured project, and build
    no statement: they run the client API's)."""
    skipped = ("gen_durable.store.migrations", "gen_durable.__main__", "gen_durable.contrib")
    for info in pkgutil.walk_packages(gen_durable.__path__, "gen_durable."):
        if not info.name.startswith(skipped):
            yield importlib.import_module(info.name)


def compiled(stmt: Any) -> str:
    """The statement's SQL as the library sends it (the configured schema translated in)."""
    return str(
        stmt.compile(
            dialect=_DIALECT,
            schema_translate_map=models.translate_map(),
            render_schema_translate=True,
        )
    )


def prebuilt() -> dict[str, str]:
    """name -> SQL of every statement a module of gen_durable builds at import."""
    found: dict[int, tuple[str, str]] = {}
    for module in modules():
        for name, value in vars(module).items():
            if isinstance(value, Select | CompoundSelect | UpdateBase | TextClause):
                found.setdefault(id(value), (f"{module.__name__}.{name}", compiled(value)))
    return dict(found.values())


def storage_functions() -> dict[str, tuple[Any, str, Callable[..., Any]]]:
    """'module.function' -> (module, attribute, function) of every public function of
    gen_durable.store that takes a connection."""
    out = {}
    for info in pkgutil.iter_modules(store.__path__):
        module = importlib.import_module(f"gen_durable.store.{info.name}")
        if module.__name__ in _PLUMBING:
            continue
        for name, fn in vars(module).items():
            if (
                inspect.isfunction(fn)
                and fn.__module__ == module.__name__
                and not name.startswith("_")
                and list(inspect.signature(fn).parameters)[:1] == ["conn"]
            ):
                out[f"{info.name}.{name}"] = (module, name, fn)
    return out


class Capture:
    """Records every SQL text sent on ``engine`` and the storage function that sent it.

    Storage functions are wrapped in place (callers reach them as module attributes, so
    the wrappers see every call); the innermost one on a thread's stack is the sender.
    """

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: dict[str, str] = {}
        """SQL text -> the storage function that sent it first ('' if none did)."""
        self.senders: set[str] = set()
        """Storage functions on the stack when a statement was sent."""
        self._local = threading.local()
        self._lock = threading.Lock()
        for key, (module, name, fn) in storage_functions().items():
            monkeypatch.setattr(module, name, self._wrap(key, fn))
        render = _fast._render

        def rendered(stmt: Any, params: Any = None) -> Any:
            hit = render(stmt, params)
            self._record(hit[1])
            return hit

        monkeypatch.setattr(_fast, "_render", rendered)
        event.listen(engine, "before_cursor_execute", self._on_execute)
        self._engine = engine

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._on_execute)

    def _wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            stack = self._stack()
            stack.append(key)
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()

        return call

    def _stack(self) -> list[str]:
        stack: list[str] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self._record(statement)

    def _record(self, sql: str) -> None:
        stack = self._stack()
        sender = stack[-1] if stack else ""
        with self._lock:
            self.sent.setdefault(sql, sender)
            # A function whose statements its callees send (insert_many) ran them too.
            self.senders.update(stack)
