"""The dashboard on a big table: server time of its pages with ``--rows`` instances.

    python -m benchmarks web [--dsn ...] [--rows 1000000] [--repeat 30]

Seeds ``gd_instances`` with ``sql/seed_dashboard.sql`` (plain ``INSERT ... SELECT
generate_series``: five classes, three queues, 93 % finished over the last week as a
week's GC retention leaves them, the rest runnable, scheduled, awaiting or running), runs
VACUUM ANALYZE, then requests each page through the WSGI app in this process (Flask's
test client: the time is the server's, the SQL and the template rendering, with no
network) and prints one JSON line per page (median, p95, max) and a Markdown table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

import gen_durable as durable
from benchmarks.output import emit, log, median, percentile
from gen_durable.store import schema as gd_schema
from gen_durable.web import create_app, read_only

SEED_SQL = Path(__file__).with_name("sql") / "seed_dashboard.sql"
TARGETS_MS: dict[str, float | None] = {"list": 200.0, "overview": 300.0, "worst": None}
NONE = "/instances?status=failed&class=bench.Z"


def pages(newest: int) -> list[tuple[str, str, str]]:
    """(name, what it shows, path) of each measured page."""
    middle = newest // 2
    return [
        ("list", "instances, unfiltered, first page", "/instances"),
        ("list", "instances, status=failed", "/instances?status=failed"),
        ("list", "instances, status=failed and a class", "/instances?status=failed&class=bench.C"),
        ("list", "instances, unfiltered, a page half-way down", f"/instances?before={middle}"),
        (
            "list",
            "instances, a class, a page half-way down",
            f"/instances?class=bench.B&before={middle}",
        ),
        (
            "list",
            "instances, a rare filter (status=running, a class)",
            "/instances?status=running&class=bench.E",
        ),
        ("overview", "overview", "/"),
        ("worst", "instances, a filter nothing matches (the whole table is walked)", NONE),
    ]


def timed(get: Callable[[str], int], path: str, repeat: int) -> list[float]:
    """Milliseconds of ``repeat`` requests of ``path`` (after two to warm up)."""
    for _ in range(2):
        assert get(path) == 200, path
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        status = get(path)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, path
    return samples


def report(url: str, schema: str, rows: int, repeat: int) -> str:
    """Seed a schema, measure the pages, drop the schema; returns a Markdown table."""
    engine = create_engine(url, pool_size=2)
    durable.configure_schema(schema)
    gd_schema.install(engine, schema)
    try:
        started = time.perf_counter()
        body = re.sub(r"--[^\n]*", "", SEED_SQL.read_text())
        with engine.begin() as conn:
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
            for statement in filter(None, (s.strip() for s in body.split(";"))):
                conn.execute(text(statement), {"rows": rows})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'VACUUM ANALYZE "{schema}".gd_instances')
        log(f"web: seeded {rows:,} rows in {time.perf_counter() - started:.0f} s")
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar_one()
            newest = conn.execute(text(f'SELECT max(id) FROM "{schema}".gd_instances')).scalar()
        client = create_app(engine, authorize=read_only).test_client()

        def get(path: str) -> int:
            return client.get(path).status_code

        lines = [
            f"PostgreSQL {version}; {rows:,} rows in gd_instances; {repeat} requests per page.\n",
            "| page | median ms | p95 ms | max ms | target |",
            "|---|---:|---:|---:|---|",
        ]
        for kind, what, path in pages(int(newest or 0)):
            samples = timed(get, path, repeat)
            target = TARGETS_MS[kind]
            figure = {
                "workload": "web",
                "page": what,
                "path": path,
                "rows": rows,
                "median_ms": round(median(samples), 1),
                "p95_ms": round(percentile(samples, 95), 1),
                "max_ms": round(max(samples), 1),
                "target_ms": target,
            }
            emit(figure)
            lines.append(
                f"| {what} | {figure['median_ms']} | {figure['p95_ms']} | {figure['max_ms']} "
                f"| {'—' if target is None else f'< {target:.0f}'} |"
            )
        return "\n".join(lines)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
