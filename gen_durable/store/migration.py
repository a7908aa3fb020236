"""Apply the library's alembic revisions: from a user's revision, or on a given bind.

From an application's own alembic revision::

    import gen_durable.migration

    def upgrade() -> None:
        gen_durable.migration.upgrade()          # on op.get_bind(), in its transaction

    def downgrade() -> None:
        gen_durable.migration.downgrade()

The library's revisions run on the same connection and in the same transaction as the
application's migration, and record their version in ``gd_alembic_version`` inside the
gen_durable schema, never in the application's ``alembic_version``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import alembic.context
import alembic.op
from alembic import command
from alembic.config import Config
from alembic.environment import EnvironmentContext
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from gen_durable.errors import ConfigurationError
from gen_durable.store import models
from gen_durable.store.migrations import (
    NESTED_ATTRIBUTE,
    ON_STEP_ATTRIBUTE,
    SCHEMA_ATTRIBUTE,
    SCRIPT_LOCATION,
    VERSION_TABLE,
    validate_schema,
)

_T = TypeVar("_T")

# alembic's `context` and `op` are process-wide proxies: two migrations running at once in
# one process would drive each other's environment. Processes serialise in the database.
_alembic_lock = threading.RLock()

__all__ = [
    "VERSION_TABLE",
    "config",
    "current",
    "downgrade",
    "downgrade_bind",
    "head",
    "script_directory",
    "steps",
    "upgrade",
    "upgrade_bind",
]


def config(schema: str | None = None, connection: Connection | None = None) -> Config:
    """An alembic ``Config`` for the packaged revisions, targeting ``schema``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Without it, alembic >= 1.16 warns about the legacy path splitting.
    cfg.set_main_option("path_separator", "os")
    cfg.attributes[SCHEMA_ATTRIBUTE] = _schema(schema)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    """The packaged revisions."""
    return ScriptDirectory(str(SCRIPT_LOCATION))


def head() -> str:
    """The newest revision this version of the library ships."""
    rev = script_directory().get_current_head()
    if rev is None:  # pragma: no cover - the package always ships revisions
        raise ConfigurationError("gen_durable ships no migrations")
    return rev


def current(bind: Engine | Connection, schema: str | None = None) -> str | None:
    """The revision the database is at in ``schema``, or None if it was never migrated.

    Reads only; on a Connection it runs in (and may autobegin) the caller's transaction.
    """
    with _connection(bind, begin=False) as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"version_table": VERSION_TABLE, "version_table_schema": _schema(schema)},
        )
        heads = ctx.get_current_heads()
    if len(heads) > 1:
        raise ConfigurationError(
            f"{VERSION_TABLE} in schema {_schema(schema)!r} records several revisions "
            f"{heads!r}; gen_durable expects one"
        )
    return heads[0] if heads else None


def upgrade_bind(
    bind: Engine | Connection,
    revision: str = "heads",
    schema: str | None = None,
    *,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """Upgrade the gen_durable schema to ``revision`` on ``bind``.

    An Engine gets a connection and a transaction of its own, committed on success. A
    Connection already in a transaction is used as is and the caller commits; one that is
    not gets a transaction, committed on success. ``on_step`` is called with each
    revision once it is applied (in the transaction: for progress output).
    """
    with _alembic_lock, _connection(bind, begin=True) as conn:
        command.upgrade(_with_steps(config(schema, conn), on_step), revision)


def downgrade_bind(
    bind: Engine | Connection,
    revision: str = "base",
    schema: str | None = None,
    *,
    on_step: Callable[[str], None] | None = None,
) -> None:
    """Downgrade the gen_durable schema to ``revision`` on ``bind`` (default: drop all)."""
    with _alembic_lock, _connection(bind, begin=True) as conn:
        command.downgrade(_with_steps(config(schema, conn), on_step), revision)


def steps(current: str | None, revision: str, *, downgrade: bool = False) -> int | None:
    """How many revision steps going from ``current`` to ``revision`` applies (None: unknown)."""
    upper, lower = (current or "base", revision) if downgrade else (revision, current or "base")
    try:
        return len(list(script_directory().iterate_revisions(upper, lower)))
    except Exception:  # a relative or unknown revision: alembic will say what is wrong
        return None


def plan(current: str | None, revision: str) -> list[tuple[str, str, str]]:
    """The revisions an upgrade from ``current`` to ``revision`` applies, oldest first:
    (revision, phase, summary). A revision names its phase in a module attribute
    (``phase = "contract"``: it removes what an older release may still read); one that
    names none is an expand step (it only adds, so an older release keeps working)."""
    try:
        scripts = list(script_directory().iterate_revisions(revision, current or "base"))
    except Exception:  # a relative or unknown revision: alembic will say what is wrong
        return []
    return [
        (s.revision, getattr(s.module, "phase", "expand"), (s.doc or "").strip().split("\n")[0])
        for s in reversed(scripts)
    ]


def _with_steps(cfg: Config, on_step: Callable[[str], None] | None) -> Config:
    if on_step is not None:

        def applied(*, step: Any, **_: Any) -> None:
            on_step(step.up_revision_id)  # the revision applied, or the one undone

        cfg.attributes[ON_STEP_ATTRIBUTE] = applied
    return cfg


def upgrade(revision: str = "heads", schema: str | None = None) -> None:
    """Upgrade the gen_durable schema from inside the caller's running alembic revision.

    Runs on ``op.get_bind()``, in the migration's transaction. In offline (``--sql``)
    mode it writes its SQL into the same script; there, ``revision`` may be a
    ``"from:to"`` range and otherwise starts from an empty database.
    """
    _run_nested(command.upgrade, revision, schema)


def downgrade(revision: str = "base", schema: str | None = None) -> None:
    """Downgrade the gen_durable schema from inside the caller's alembic revision.

    Offline (``--sql``), alembic needs a ``"from:to"`` range for ``revision``.
    """
    _run_nested(command.downgrade, revision, schema)


def _run_nested(action: Callable[..., None], revision: str, schema: str | None) -> None:
    outer_ops = _proxy(alembic.op, Operations)
    outer_env = _proxy(alembic.context, EnvironmentContext)
    if outer_ops is None:
        raise ConfigurationError(
            "gen_durable.migration.upgrade()/downgrade() must be called from inside an "
            "alembic revision; use upgrade_bind()/downgrade_bind() with an Engine or "
            "Connection otherwise"
        )
    outer = outer_ops.get_context()
    if outer.as_sql:
        cfg = config(schema)
        cfg.attributes[NESTED_ATTRIBUTE] = True
        cfg.output_buffer = outer.output_buffer
        sql = True
    else:
        cfg = config(schema, outer_ops.get_bind())
        sql = False
    try:
        with _alembic_lock:
            action(cfg, revision, sql=sql)
    finally:
        # A nested alembic run installs its own `op` and `context` proxies and clears
        # them when it ends; the caller's revision (and env.py) still needs theirs.
        if outer_env is not None:
            outer_env._install_proxy()
        outer_ops._install_proxy()


def _proxy(module: object, kind: type[_T]) -> _T | None:
    found = getattr(module, "_proxy", None)
    return found if isinstance(found, kind) else None


def _schema(schema: str | None) -> str:
    return validate_schema(schema or models.schema_name())


@contextlib.contextmanager
def _connection(bind: Engine | Connection, *, begin: bool) -> Iterator[Connection]:
    if isinstance(bind, Engine):
        if begin:
            with bind.begin() as conn:
                yield conn
        else:
            with bind.connect() as conn:
                yield conn
    elif begin and not bind.in_transaction():
        with bind.begin():
            yield bind
    else:
        yield bind
