"""The runner and the client API behind a real PgBouncer in transaction pooling mode.

PgBouncer listens on a unix socket in a private directory (no port to collide on) in
front of the suite's server, with a server pool much smaller than a runner's connection
pool: consecutive transactions of one client connection land on whichever server
connection is free. Session state, session advisory locks, LISTEN or server-side prepared
statements would break here; the runner is configured as docs/runner.md says ("Behind
PgBouncer"): ``listen=False`` and an engine with ``prepare_threshold=None``.

PgBouncer 1.21+ can track prepared statements itself; it is told not to
(``max_prepared_statements = 0``), so the recipe is checked against the older behaviour.
Without the binary the tests skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import pytest
from _support.dbutil import libpq_dsn
from _support.helpers import TESTS, scalar, wait_status, wait_until
from procs.cli_app import Greet
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import gen_durable as durable
from gen_durable import (
    FSM,
    Await,
    Cron,
    Done,
    Job,
    RateLimit,
    RateLimited,
    Runner,
    Sleep,
    Spawn,
)

SERVER_POOL = 3
"""Server connections PgBouncer may open per database (a runner here holds up to 11)."""
PORT = 6432
"""Only names PgBouncer's socket file, in a directory of its own."""
LOG = "pgbouncer.log"
POLL: dict[str, Any] = {"listen": False, "poll_interval": 0.1, "lease": 5.0, "grace": 2.0}
CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")


def pgbouncer_binary() -> str:
    """The ``pgbouncer`` executable; skips the test without one (fails it when CI=true)."""
    found = shutil.which("pgbouncer") or next(
        (path for path in CANDIDATES if os.access(path, os.X_OK)), None
    )
    if found is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it")
        pytest.skip(reason)
    return found


def _version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"(\d+)\.(\d+)", out.stdout)
    assert match, out.stdout
    return tuple(int(part) for part in match.groups())


@dataclass
class Bouncer:
    """A running PgBouncer: its socket directory and port, and how to route a URL through it."""

    proc: subprocess.Popen[bytes]
    directory: str
    port: int

    def conninfo(self, url: str) -> str:
        """libpq conninfo of ``url``'s database, through PgBouncer."""
        params = conninfo_to_dict(libpq_dsn(url))
        params.update(host=self.directory, port=str(self.port))
        return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})

    def url(self, url: str) -> str:
        """SQLAlchemy URL of ``url``'s database, through PgBouncer."""
        u = make_url(url)
        query = {k: v for k, v in u.query.items() if k not in ("host", "port")}
        query.update(host=self.directory, port=str(self.port))
        return u.set(host=None, port=None, query=query).render_as_string(hide_password=False)

    def engine(self, url: str) -> Engine:
        """The engine recipe of docs/runner.md: no server-side prepared statements."""
        return create_engine(
            self.url(url),
            connect_args={"prepare_threshold": None},
            pool_size=20,
            max_overflow=0,
        )


def _config(directory: str, server: dict[str, Any], version: tuple[int, ...]) -> str:
    target = f"host={server.get('host') or '127.0.0.1'} port={server.get('port') or 5432}"
    if server.get("password"):
        target += f" password={server['password']}"
    lines = [
        "[databases]",
        f"* = {target}",
        "[pgbouncer]",
        "listen_addr =",
        f"listen_port = {PORT}",
        f"unix_socket_dir = {directory}",
        "auth_type = trust",
        f"auth_file = {directory}/userlist.txt",
        "pool_mode = transaction",
        f"default_pool_size = {SERVER_POOL}",
        "max_client_conn = 500",
    ]
    if version >= (1, 21):  # behave like the versions without prepared-statement support
        lines.append("max_prepared_statements = 0")
    return "\n".join(lines) + "\n"


def _run_as(server: dict[str, Any]) -> int | None:
    """PgBouncer refuses to run as root: then use the server socket's owner, or nobody."""
    if os.geteuid() != 0:
        return None
    host = server.get("host") or ""
    if host.startswith("/"):
        owner = os.stat(host).st_uid
        if owner != 0:
            return owner
    return pwd.getpwnam("nobody").pw_uid


@pytest.fixture(scope="module")
def bouncer(server_url: str) -> Iterator[Bouncer]:
    """One PgBouncer for the module, routing every database name to the test server."""
    binary = pgbouncer_binary()
    server = conninfo_to_dict(libpq_dsn(server_url))
    server.setdefault("password", os.environ.get("PGPASSWORD"))
    directory = tempfile.mkdtemp(prefix="gd-pgbouncer-")
    user = server.get("user") or pwd.getpwuid(os.geteuid()).pw_name
    with open(os.path.join(directory, "userlist.txt"), "w") as f:
        f.write(f'"{user}" "{server.get("password") or ""}"\n')
    ini = os.path.join(directory, "pgbouncer.ini")
    with open(ini, "w") as f:
        f.write(_config(directory, server, _version(binary)))
    uid = _run_as(server)
    if uid is not None:
        os.chmod(directory, 0o755)
        for name in os.listdir(directory):
            os.chown(os.path.join(directory, name), uid, -1)
        os.chown(directory, uid, -1)
    with open(os.path.join(directory, LOG), "wb") as log:  # PgBouncer logs to stderr
        proc = subprocess.Popen([binary, ini], user=uid, stdout=log, stderr=subprocess.STDOUT)
    bouncer = Bouncer(proc, directory, PORT)
    try:
        wait_until(lambda: _accepts(bouncer, server_url), timeout=20)
        yield bouncer
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _accepts(bouncer: Bouncer, server_url: str) -> bool:
    if bouncer.proc.poll() is not None:
        with open(os.path.join(bouncer.directory, LOG)) as log:
            pytest.fail(f"pgbouncer exited with {bouncer.proc.returncode}:\n{log.read()}")
    try:
        psycopg.connect(bouncer.conninfo(server_url), connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture
def via_bouncer(bouncer: Bouncer, db_url: str) -> Iterator[Engine]:
    """An engine on the test's database through PgBouncer, built by the documented recipe."""
    eng = bouncer.engine(db_url)
    yield eng
    eng.dispose()


# -- the bouncer really multiplexes: why the engine recipe is needed ---------------------------


def _repeat(conn: psycopg.Connection[Any], query: str, times: int = 6) -> None:
    for _ in range(times):  # past psycopg's prepare_threshold (5): prepared server-side
        conn.execute(query).fetchall()


def test_server_side_prepared_statements_collide_without_the_recipe(
    bouncer: Bouncer, db_url: str
) -> None:
    dsn = bouncer.conninfo(db_url)
    with (
        psycopg.connect(dsn, autocommit=True) as one,
        psycopg.connect(dsn, autocommit=True) as two,
    ):
        _repeat(one, "SELECT 1")
        with pytest.raises(
            (psycopg.errors.DuplicatePreparedStatement, psycopg.errors.InvalidSqlStatementName)
        ):
            _repeat(two, "SELECT 2")  # psycopg names it _pg3_0 too, on the shared backend
    with (
        psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as one,
        psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as two,
    ):
        _repeat(one, "SELECT 1")
        _repeat(two, "SELECT 2")


# -- the workload ----------------------------------------------------------------------------


class Backend(Job):
    """Returns the server process its step's transaction ran on."""

    name = "bouncer.Backend"

    def perform(self, args: Any, ctx: durable.Context) -> int:
        return int(ctx.session.execute(text("SELECT pg_backend_pid()")).scalar_one())


class Checkout(FSM):
    """A signal, a durable timer and an await timeout, in that order."""

    name = "bouncer.Checkout"
    steps = ("wait", "nap", "linger", "finish")

    def wait(self, ctx: durable.Context) -> Await:
        return Await("paid", then="nap", timeout=600)

    def nap(self, ctx: durable.Context) -> Sleep:
        ctx.state["paid"] = [s.payload for s in ctx.awaited]
        return Sleep(0.2, then="linger")

    def linger(self, ctx: durable.Context) -> Await:
        return Await("never", then="finish", timeout=0.2, on_timeout="finish")

    def finish(self, ctx: durable.Context) -> Done:
        return Done({"paid": ctx.state["paid"], "timed_out": ctx.awaited == ()})


class Square(Job):
    name = "bouncer.Square"

    def perform(self, args: Any) -> int:
        return int(args["n"]) ** 2


class Fan(FSM):
    name = "bouncer.Fan"
    steps = ("fan_out", "join")

    def fan_out(self, ctx: durable.Context) -> Spawn:
        return Spawn([Square.new(args={"n": n}) for n in range(1, 6)], then="join")

    def join(self, ctx: durable.Context) -> Done:
        return Done(sum(c.result for c in ctx.children))


class Overlap:
    """How many steps of one concurrency key ran at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


KEYED = Overlap()


class Keyed(Job):
    name = "bouncer.Keyed"

    def perform(self, args: Any) -> None:
        with KEYED:
            time.sleep(0.02)  # long enough for a second claim of the key to overlap


class Limited(FSM):
    """Takes from its bucket; refused once by the remote side (the bucket goes into debt)."""

    name = "bouncer.Limited"
    steps = ("call",)
    rate_limit = RateLimit(50, per=1, burst=2, partition=lambda state: state["tenant"])

    refused: ClassVar[set[int]] = set()

    def call(self, ctx: durable.Context) -> Done | RateLimited:
        # Remembered here, not in ctx.state: a RateLimited re-run starts from the state
        # it was claimed with.
        if ctx.instance_id not in self.refused:
            self.refused.add(ctx.instance_id)
            return RateLimited(0.1)
        return Done("called")


def _count(engine: Engine, status: str) -> int:
    query = "SELECT count(*) FROM gen_durable.gd_instances WHERE status = :s"
    count = scalar(engine, query, s=status)
    assert isinstance(count, int)
    return count


def test_a_poll_only_runner_runs_the_whole_api_through_pgbouncer(
    via_bouncer: Engine, engine: Engine
) -> None:
    KEYED.most = 0
    with Session(via_bouncer) as s, s.begin():
        backends = durable.insert_all(s, [Backend.new() for _ in range(20)])
        order = durable.insert(s, Checkout, correlation_key="order:1")
        fan = durable.insert(s, Fan)
        durable.insert_all(s, [Keyed.new(concurrency_key="k") for _ in range(6)])
        limited = durable.insert_all(s, [Limited.new(state={"tenant": t}) for t in "abcd"])
        doomed = durable.insert(s, Checkout, correlation_key="order:2")
    with Runner(via_bouncer, queues={"default": 4}, **POLL):
        wait_status(via_bouncer, order, "awaiting")
        with Session(via_bouncer) as s, s.begin():
            durable.cancel(s, doomed)
            first = durable.signal(s, "order:1", "paid", 100, idempotency_key="evt_1")
            again = durable.signal(s, "order:1", "paid", 100, idempotency_key="evt_1")
        assert (first.duplicate, again.duplicate) == (False, True)
        done = wait_status(via_bouncer, order, "done", timeout=30)
        assert wait_status(via_bouncer, fan, "done").result == 1 + 4 + 9 + 16 + 25
        assert durable.result(via_bouncer, fan, timeout=10, listen=False, poll_interval=0.05) == 55
        for iid in [*backends, *limited]:
            wait_status(via_bouncer, iid, "done")
        wait_until(lambda: _count(engine, "done") == 20 + 1 + 1 + 5 + 6 + 4)
    assert done.result == {"paid": [100], "timed_out": True}
    assert KEYED.most == 1
    with Session(via_bouncer) as s:
        assert durable.get(s, "order:2").status == "cancelled"
        pids = {durable.get(s, iid).result for iid in backends}
    assert len(pids) <= SERVER_POOL  # twenty steps, eleven client connections, few servers
    assert _count(engine, "available") == _count(engine, "running") == 0


class Tick(Job):
    name = "bouncer.Tick"

    def perform(self, args: Any) -> str:
        return "tick"


def test_cron_leadership_holds_behind_pgbouncer(via_bouncer: Engine, engine: Engine) -> None:
    schedule = Cron("* * * * *", Tick, name="bouncer-tick", grace=120)
    options: dict[str, Any] = {**POLL, "queues": {"default": 2}, "cron": [schedule]}
    with Runner(via_bouncer, **options) as one, Runner(via_bouncer, **options) as two:
        wait_until(lambda: _count(engine, "done") >= 1)
        assert one.leader is not None and two.leader is not None
        wait_until(lambda: one.leader.is_leader or two.leader.is_leader)  # type: ignore[union-attr]
        assert one.leader.is_leader != two.leader.is_leader
    ticks = scalar(engine, "SELECT count(*) FROM gen_durable.gd_cron_ticks")
    instances = scalar(engine, "SELECT count(*) FROM gen_durable.gd_instances")
    assert ticks == instances and ticks in (1, 2)  # 2 if a minute turned meanwhile


def test_gen_durable_run_no_listen_works_through_pgbouncer(
    bouncer: Bouncer, db_url: str, engine: Engine
) -> None:
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "GEN_DURABLE_DSN": bouncer.url(db_url)}
    args = ["--import", "procs.cli_app", "--queues", "default=2", "--poll-interval", "0.01"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gen_durable", "run", "--no-listen", "--grace", "1", *args],
        env=env,
        cwd=TESTS,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Polling every 10 ms, the worker repeats its statements far past psycopg's
        # prepare_threshold; without the flag's recipe they collide on shared backends.
        for n in range(8):
            with Session(engine) as s, s.begin():
                iid = durable.insert(s, Greet, args={"who": str(n)})
            assert wait_status(engine, iid, "done", timeout=30).result == f"hello {n}"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        errors = proc.stderr.read() if proc.stderr else ""
    assert code == 0, errors
    assert "prepared statement" not in errors
