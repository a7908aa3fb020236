"""W2 FSMs: instances of ten no-op steps each; and the same with steps that write one row
through ``ctx.session`` (each such step commits in a transaction of its own).

Each run drains ``--steps`` steps (``--steps / 10`` instances) with the Runner in a child
process, like W1 at concurrency 10: the rate is FSM steps committed per second, with the
Runner's and the server's CPU per step; between runs the finished instances are deleted
and new ones inserted until the backlog is full again.
"""

from __future__ import annotations

import functools

from sqlalchemy import TextClause, text

import gen_durable as durable
from benchmarks.common import Bench, drain_runs
from benchmarks.jobs import runs_figure
from benchmarks.output import log

STEPS = tuple(f"s{i}" for i in range(10))
CONCURRENCY = 10
TABLE = "bench_writes"


def _next(name: str) -> durable.Next | durable.Done:
    index = STEPS.index(name)
    if index == len(STEPS) - 1:
        return durable.Done()
    return durable.Next(STEPS[index + 1])


class Chain(durable.FSM):
    """Ten no-op steps, then done."""

    name = "bench.Chain"
    steps = STEPS

    def step(self, name: str, ctx: durable.Context) -> durable.Next | durable.Done:
        return _next(name)


class WritingChain(durable.FSM):
    """Ten steps that each insert one row through ``ctx.session``, then done."""

    name = "bench.WritingChain"
    steps = STEPS

    def step(self, name: str, ctx: durable.Context) -> durable.Next | durable.Done:
        ctx.session.execute(_write_sql(), {"i": ctx.instance_id, "s": name})
        return _next(name)


@functools.cache
def _write_sql() -> TextClause:
    """The INSERT of a writing step, in the configured schema (the Runner's process)."""
    return text(
        f'INSERT INTO "{durable.schema_name()}".{TABLE} (instance_id, step) VALUES (:i, :s)'
    )


def setup(bench: Bench) -> None:
    """The table the writing steps insert into (in the bench schema)."""
    with bench.admin.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE IF NOT EXISTS "{bench.schema}".{TABLE} (id bigserial PRIMARY KEY, '
            "instance_id bigint NOT NULL, step text NOT NULL, at timestamptz DEFAULT now())"
        )


def run(bench: Bench) -> None:
    instances = bench.options.steps // len(STEPS)
    window = bench.options.counted_window
    setup(bench)
    bench.reset()
    log(f"W2: {instances:,} FSMs x {len(STEPS)} no-op steps at concurrency {CONCURRENCY}")
    runs = drain_runs(bench, Chain, instances, CONCURRENCY, "W2 no-op", window=window)
    runs_figure(
        bench, "W2", "FSM steps, no-op", runs, CONCURRENCY, instances=instances, steps_each=10
    )
    bench.reset()
    log(f"W2: {instances:,} FSMs x {len(STEPS)} steps writing a row through ctx.session")
    runs = drain_runs(bench, WritingChain, instances, CONCURRENCY, "W2 ctx.session", window=window)
    runs_figure(
        bench,
        "W2",
        "FSM steps, 1 row via ctx.session",
        runs,
        CONCURRENCY,
        instances=instances,
        steps_each=10,
    )
