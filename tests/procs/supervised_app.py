"""Classes for the supervisor tests: ``gen-durable run --import procs.supervised_app
--processes N``.

Every step records its run (with the process id) in ``sup_runs`` outside any transaction,
so a run that is killed still counts, and its effect in ``sup_effects`` through
``ctx.session`` under a primary key of (instance, version), so it commits with the
transition, once. ``Gated.work`` holds its worker until the test opens ``sup_gate``.

With ``GD_TEST_CHILD_DIES`` set, a process started by a supervisor dies as soon as it
imports this module: a child that keeps dying (the supervisor itself imports it safely).
With ``GD_TEST_CHILD_REFUSES`` set, importing it there raises ``ConfigurationError``: a
child whose configuration keeps it from starting.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from sqlalchemy import Engine, create_engine, pool, text

import gen_durable as durable
from gen_durable import FSM, Done, Next
from gen_durable.errors import ConfigurationError

if os.environ.get("GD_TEST_CHILD_DIES") and multiprocessing.parent_process() is not None:
    os._exit(7)
if os.environ.get("GD_TEST_CHILD_REFUSES") and multiprocessing.parent_process() is not None:
    raise ConfigurationError("this child's configuration is refused")

SETUP = """
CREATE TABLE IF NOT EXISTS sup_runs (
    id bigserial PRIMARY KEY, instance_id bigint NOT NULL, step text NOT NULL,
    pid int NOT NULL);
CREATE TABLE IF NOT EXISTS sup_effects (
    instance_id bigint, version int, step text NOT NULL, pid int NOT NULL,
    PRIMARY KEY (instance_id, version));
CREATE TABLE IF NOT EXISTS sup_gate (open bool NOT NULL);
INSERT INTO sup_gate SELECT false WHERE NOT EXISTS (SELECT FROM sup_gate);
"""


def setup(engine: Engine) -> None:
    """Create the tables the supervisor tests count in, with the gate closed."""
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)


def open_gate(engine: Engine) -> None:
    """Let every ``Gated.work`` step that waits go on."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE sup_gate SET open = true"))


_ENGINE: Engine | None = None


def _engine() -> Engine:
    global _ENGINE
    if _ENGINE is None:  # the child's database, as the test gave it to the command line
        _ENGINE = create_engine(os.environ["GEN_DURABLE_DSN"], poolclass=pool.NullPool)
    return _ENGINE


def _record_run(ctx: durable.Context) -> None:
    with _engine().begin() as conn:
        conn.execute(
            text("INSERT INTO sup_runs (instance_id, step, pid) VALUES (:i, :s, :p)"),
            {"i": ctx.instance_id, "s": ctx.step, "p": os.getpid()},
        )


def _record_effect(ctx: durable.Context) -> None:
    ctx.session.execute(
        text("INSERT INTO sup_effects (instance_id, version, step, pid) VALUES (:i, :v, :s, :p)"),
        {"i": ctx.instance_id, "v": ctx.version, "s": ctx.step, "p": os.getpid()},
    )


def _gate_open() -> bool:
    with _engine().connect() as conn:
        return bool(conn.execute(text("SELECT open FROM sup_gate")).scalar())


class Gated(FSM):
    """``work`` waits for the gate (or for its claim to be released), then ``finish``."""

    name = "sup.Gated"
    steps = ("work", "finish")

    def work(self, ctx: durable.Context) -> Next:
        _record_run(ctx)
        while not _gate_open():
            if ctx.cancelled:  # released at shutdown: its commit would be fenced out
                raise RuntimeError("released before the gate opened")
            time.sleep(0.02)
        _record_effect(ctx)
        return Next("finish")

    def finish(self, ctx: durable.Context) -> Done:
        _record_run(ctx)
        _record_effect(ctx)
        state: dict[str, Any] = ctx.state
        return Done(state["n"] * 2)
