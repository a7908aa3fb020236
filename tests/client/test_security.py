"""Least privilege, bound parameters, no code from data, no payloads in logs.

The roles test runs the SQL of docs/security.md as written (with names of its own): a
migrator that owns the schema and a runtime role with plain DML rights, under which a
Runner and the whole client API must work and every DDL statement must be refused.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _support.dbutil import DatabaseFactory
from _support.helpers import ROOT, scalar, snapshot, wait_status, wait_until
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import FSM, Await, Cron, Done, Job, RateLimit, Runner, Sleep, Spawn, telemetry
from gen_durable.cli import main as cli_main
from gen_durable.errors import ValidationError
from gen_durable.store import migration, models, schema
from gen_durable.store.migrations import validate_schema

PACKAGE = ROOT / "gen_durable"
FAST = {"lease": 5.0, "poll_interval": 0.1, "grace": 2.0}
POOL = {"pool_size": 30, "max_overflow": 20}


class Order(FSM):
    name = "security.Order"
    queue = "secure"
    steps = ("start", "fan_out", "gather")

    def start(self, ctx: durable.Context) -> Await:
        return Await("paid", then="fan_out")

    def fan_out(self, ctx: durable.Context) -> Spawn:
        return Spawn([Line.new(args={"n": n}) for n in range(3)], then="gather")

    def gather(self, ctx: durable.Context) -> Done:
        return Done(sum(child.result for child in ctx.children))


class Line(Job):
    """Takes from a rate-limit bucket and holds a concurrency key."""

    name = "security.Line"
    queue = "secure"
    rate_limit = RateLimit(1000, per=1)
    concurrency_key = staticmethod(lambda args: "lines")
    concurrency_limit = 2

    def perform(self, args: Any) -> int:
        return int(args["n"]) * 10


class Flaky(Job):
    name = "security.Flaky"
    queue = "secure"
    max_attempts = 1
    calls = 0

    def perform(self, args: Any) -> str:
        type(self).calls += 1
        if type(self).calls == 1:
            raise RuntimeError("first run fails")
        return "ok"


class Nap(FSM):
    name = "security.Nap"
    queue = "secure"
    steps = ("start", "end")

    def start(self, ctx: durable.Context) -> Sleep:
        return Sleep(3600, then="end")

    def end(self, ctx: durable.Context) -> Done:
        return Done()


class Tick(Job):
    name = "security.Tick"
    queue = "secure"

    def perform(self, args: Any) -> str:
        return "tick"


# --- the roles of docs/security.md -------------------------------------------------------


def doc_sql(heading: str) -> str:
    """The SQL block of docs/security.md whose first line is ``-- <heading>``."""
    page = (ROOT / "docs" / "security.md").read_text()
    for block in re.findall(r"```sql\n(.*?)```", page, re.S):
        if block.startswith(f"-- {heading}"):
            return str(block)
    raise AssertionError(f"docs/security.md has no SQL block headed {heading!r}")


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip().strip("-").strip()]


@dataclass
class Roles:
    admin: Engine
    migrator: Engine
    runtime: Engine
    names: dict[str, str]

    def run_doc(self, engine: Engine, heading: str) -> None:
        sql = doc_sql(heading)
        for old, new in self.names.items():
            sql = re.sub(rf"\b{old}\b", new, sql)
        with engine.begin() as conn:
            for statement in statements(sql):
                conn.execute(text(statement))


@pytest.fixture
def roles(db_factory: DatabaseFactory, server_url: str) -> Iterator[Roles]:
    """An empty database, and a migrator and a runtime role unique to this test."""
    tag = uuid.uuid4().hex[:10]
    names = {"gd_migrator": f"gd_mig_{tag}", "gd_runtime": f"gd_run_{tag}"}
    database = db_factory.new_name("sec")
    names["app"] = database
    url = db_factory.create(database)
    admin = create_engine(url)

    def as_role(role: str) -> Engine:
        return create_engine(make_url(url).set(username=names[role]), **POOL)

    engines = [admin, as_role("gd_migrator"), as_role("gd_runtime")]
    found = Roles(*engines, names=names)
    try:
        found.run_doc(admin, "as a superuser")
        yield found
    finally:
        for engine in engines:
            engine.dispose()
        db_factory.drop(database)
        server = create_engine(server_url, isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            for role in (names["gd_migrator"], names["gd_runtime"]):
                conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        server.dispose()


def migrate(engine: Engine) -> None:
    dsn = engine.url.render_as_string(hide_password=False)
    out = CliRunner().invoke(cli_main, ["migrate", "--dsn", dsn])
    assert out.exit_code == 0, out.output


def refused_ddl(engine: Engine) -> list[str]:
    """Every DDL statement the role tries; returns those PostgreSQL allowed."""
    attempts = [
        "CREATE TABLE gen_durable.gd_evil (id int)",
        "CREATE INDEX ON gen_durable.gd_instances (fsm)",
        "ALTER TABLE gen_durable.gd_instances ADD COLUMN evil int",
        "ALTER TABLE gen_durable.gd_signals DROP COLUMN payload",
        "DROP TABLE gen_durable.gd_signals",
        "TRUNCATE gen_durable.gd_instances",
        "CREATE SCHEMA evil",
        "CREATE TABLE public.gd_evil (id int)",
        "CREATE FUNCTION gen_durable.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "ALTER SCHEMA gen_durable RENAME TO evil",
        "DROP SCHEMA gen_durable CASCADE",
    ]
    allowed = []
    for statement in attempts:
        try:
            with engine.begin() as conn:
                conn.execute(text(statement))
        except ProgrammingError as exc:
            assert getattr(exc.orig, "sqlstate", None) == "42501", exc  # insufficient privilege
        else:
            allowed.append(statement)
    return allowed


def test_a_runtime_role_without_ddl_rights_runs_everything(roles: Roles) -> None:
    roles.run_doc(roles.migrator, "as gd_migrator: default privileges")
    migrate(roles.migrator)
    run = roles.runtime
    schema.check(run)
    with Session(run) as s, s.begin():
        order = durable.insert(s, Order, correlation_key="order:1")
        flaky = durable.insert(s, Flaky)
        nap = durable.insert(s, Nap)
        durable.signal(s, "order:1", "paid", {"amount": 10}, idempotency_key="evt-1")
        durable.pause_queue(s, "secure")
        durable.resume_queue(s, "secure")
    with Session(roles.admin) as s, s.begin():  # an instance finished long ago, for the GC
        old = durable.insert(s, Tick)
        s.execute(
            text(
                "UPDATE gen_durable.gd_instances SET status = 'done', "
                "finished_at = now() - interval '2 days' WHERE id = :id"
            ),
            {"id": old},
        )
    cron = Cron("* * * * *", Tick, name="security-tick", grace=120)
    with Runner(
        run, queues={"secure": 4}, cron=[cron], gc_retention=3600, gc_interval=0.2, **FAST
    ) as runner:
        assert durable.result(run, order, timeout=20) == 30
        wait_status(run, flaky, "failed")
        with Session(run) as s, s.begin():
            durable.retry(s, flaky)
            assert durable.cancel(s, nap) is True
        assert durable.result(run, flaky, timeout=20) == "ok"
        wait_until(lambda: scalar(run, "SELECT count(*) FROM gen_durable.gd_cron_ticks"))
        wait_until(
            lambda: scalar(
                run,
                "SELECT count(*) FROM gen_durable.gd_instances WHERE fsm = :f AND status = 'done'",
                f=Tick.name,
            )
        )
        wait_until(
            lambda: (
                not scalar(
                    run, "SELECT count(*) FROM gen_durable.gd_instances WHERE id = :i", i=old
                )
            )
        )
        assert runner.leader is not None and runner.leader.is_leader
    assert snapshot(run, nap).status == "cancelled"
    assert scalar(run, "SELECT count(*) FROM gen_durable.gd_rate_buckets") == 1
    assert refused_ddl(run) == []
    with pytest.raises(ProgrammingError):
        schema.install(run)  # migrating needs the migrator


def test_grants_on_an_existing_schema_suffice_too(roles: Roles) -> None:
    migrate(roles.migrator)
    roles.run_doc(roles.migrator, "as gd_migrator: objects that already exist")
    with Session(roles.runtime) as s, s.begin():
        iid = durable.insert(s, Flaky, correlation_key="existing")
        durable.signal(s, iid, "nudge")
        assert durable.cancel(s, "existing") is True
    assert snapshot(roles.runtime, iid).status == "cancelled"
    assert refused_ddl(roles.runtime) == []
    assert migration.current(roles.runtime) == migration.head()


# --- the schema name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        'gen_durable"; DROP SCHEMA public CASCADE; --',
        "gen_durable; DROP TABLE x",
        "public.gd_instances",
        "evil\x00",
        "x" * 55,
        "",
        "1abc",
        "with space",
        "ünïcode",
        None,
        5,
    ],
    ids=repr,
)
def test_a_malicious_or_unusable_schema_name_is_refused(engine: Engine, name: Any) -> None:
    before = scalar(engine, "SELECT count(*) FROM pg_namespace")
    attempts = [lambda: models.configure_schema(name), lambda: validate_schema(name)]
    if name:  # None or "" given to these means the configured schema
        attempts += [lambda: schema.install(engine, name), lambda: migration.current(engine, name)]
    for attempt in attempts:
        with pytest.raises(ValidationError, match="schema"):
            attempt()
    assert models.schema_name() == "gen_durable"
    assert scalar(engine, "SELECT count(*) FROM pg_namespace") == before
    if isinstance(name, str) and name:
        out = CliRunner().invoke(cli_main, ["migrate", "--sql", "--schema", name])
        assert out.exit_code != 0 and "schema" in out.output


def test_plain_identifiers_are_accepted_as_schema_names() -> None:
    for name in ("gen_durable", "_x", "Tenant_42", "a" * 54):
        assert validate_schema(name) == name


# --- the package's source ---------------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
PICKLES_ONLY = {"gen_durable/supervisor.py"}
"""Modules that may import pickle to *pickle* (never unpickle): the supervisor checks that
its children's description pickles before it spawns them (multiprocessing's spawn
unpickles it in the child, from the supervisor's own pipe)."""


def package_sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def test_the_package_never_unpickles_or_evaluates_code() -> None:
    found = []
    for path, tree in package_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                names = {node.func.id} & FORBIDDEN_CALLS
            else:
                continue
            if names & (FORBIDDEN_MODULES | FORBIDDEN_CALLS):
                if names == {"pickle"} and str(path.relative_to(ROOT)) in PICKLES_ONLY:
                    continue
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
    for name in PICKLES_ONLY:
        source = (ROOT / name).read_text()
        assert not re.search(r"pickle\.(loads?|Unpickler)\b", source), name
    # And a plain text search, for what the syntax tree cannot see (getattr tricks).
    for path, _ in package_sources():
        source = path.read_text()
        if str(path.relative_to(ROOT)) in PICKLES_ONLY:
            source = source.replace("pickle.dumps(", "")
        assert not re.search(r"\bpickle\.|\bmarshal\.|\beval\(|\bexec\(", source), path


def _is_formatted(node: ast.expr) -> bool:
    """An f-string, a %-format, a concatenation or a .format() call."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
    )


def test_sql_text_is_never_assembled_from_values() -> None:
    """``text(...)``, ``execute(...)`` and ``exec_driver_sql(...)`` take literal SQL only."""
    found = []
    for path, tree in package_sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in ("text", "execute", "exec_driver_sql") and _is_formatted(node.args[0]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


# --- payloads never reach the logs -------------------------------------------------------------

MARKER = "PAYLOAD-MARKER-"
BIG = MARKER + "x" * 200_000


class Leaky(FSM):
    """Carries a large recognisable state and payload through a failure and a refusal."""

    name = "security.Leaky"
    queue = "leaky"
    steps = ("start", "boom", "grow")
    max_attempts = 1

    def start(self, ctx: durable.Context) -> Await:
        return Await("go", then=ctx.state["next"])

    def boom(self, ctx: durable.Context) -> Done:
        raise ValueError("the step failed")

    def grow(self, ctx: durable.Context) -> Done:
        return Done({"blob": BIG * 6})  # over the payload limit


def test_payloads_never_appear_in_log_lines_or_events(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gen_durable")
    with telemetry.record() as recording:
        with Session(engine) as s, s.begin():
            ids = [
                durable.insert(s, Leaky, state={"next": step, "blob": BIG}, correlation_key=step)
                for step in ("boom", "grow")
            ]
            for step in ("boom", "grow"):
                durable.signal(s, step, "go", {"blob": BIG})
        with Runner(engine, queues={"leaky": 2}, **FAST):
            failed = [wait_status(engine, iid, "failed") for iid in ids]
    assert [f.error["type"] for f in failed] == ["ValueError", "PayloadTooLarge"]
    assert MARKER not in json.dumps([f.error for f in failed])
    assert caplog.records and recording.events
    assert MARKER not in caplog.text
    for record in caplog.records:
        assert MARKER not in repr(record.__dict__), record.getMessage()
    for event in recording.events:
        assert MARKER not in repr(dict(event.data)), event.name
