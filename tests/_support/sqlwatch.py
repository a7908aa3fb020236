"""Watching what gen_durable sends to the database: statement counts and query plans.

Every SQL statement of gen_durable goes through SQLAlchemy, so engine and connection
events see them all; psycopg adds a BEGIN and a COMMIT (or ROLLBACK) round trip of its own
per transaction, which the ``begin``/``commit``/``rollback`` events count.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, event

HOT_THREADS = ("gd-dispatch", "gd-committer", "gd-worker", "gd-notifier")
"""Runner threads whose work is per step (the rest — heartbeat, timers, reaper, GC — run
per interval, whatever the number of steps)."""


def thread_kind() -> str:
    name = threading.current_thread().name
    return "hot" if name.startswith(HOT_THREADS) else "other"


class StatementCounter:
    """Counts statements, BEGINs, COMMITs and ROLLBACKs on an engine, by kind of thread."""

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.texts: Counter[str] = Counter()
        self._engine = engine
        self._hooks: list[tuple[str, Callable[..., Any]]] = [
            ("before_cursor_execute", self._statement),
            ("begin", self._event("begin")),
            ("commit", self._event("commit")),
            ("rollback", self._event("rollback")),
        ]
        for name, fn in self._hooks:
            event.listen(engine, name, fn)

    def close(self) -> None:
        for name, fn in self._hooks:
            event.remove(self._engine, name, fn)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        kind = thread_kind()
        with self._lock:
            self.counts[(kind, "statements")] += 1
            if kind == "hot":
                self.texts[re.sub(r"\s+", " ", statement[:200])[:80]] += 1

    def _event(self, what: str) -> Callable[..., None]:
        def count(*_: Any) -> None:
            kind = thread_kind()
            with self._lock:
                self.counts[(kind, what)] += 1

        return count

    def hot(self) -> dict[str, int]:
        """Counts of the per-step threads: statements, begin, commit, rollback, round_trips."""
        with self._lock:
            out = {
                what: self.counts[("hot", what)]
                for what in ("statements", "begin", "commit", "rollback")
            }
        out["round_trips"] = out["statements"] + out["begin"] + out["commit"] + out["rollback"]
        return out


# -- plans -------------------------------------------------------------------------------------


def explain_each(
    conn: Connection,
    call: Callable[[], object],
    match: Callable[[str], bool],
    *,
    prepared: bool = False,
    analyze: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """Run ``call``; EXPLAIN (FORMAT JSON) each statement it sends that ``match`` accepts,
    with its bound parameters, just before it runs (then it runs as usual).

    With ``prepared`` the plan is the one a prepared statement settles on: psycopg
    prepares a statement on the server after a few executions, and from the sixth
    execution on PostgreSQL may switch it to a generic plan (one for any parameters). The
    statement is PREPAREd and EXPLAIN EXECUTEd six times with the same parameters; the
    last plan is returned. With ``analyze`` the statement runs under EXPLAIN ANALYZE (in a
    savepoint that is rolled back) and the plan has actual row counts. Returns
    (statement, plan) pairs, a plan being its top node.
    """
    found: list[tuple[str, dict[str, Any]]] = []

    def hook(
        _conn: Any, cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
    ) -> tuple[str, Any]:
        if match(statement):
            with cursor.connection.cursor() as cur:
                if prepared:
                    plan = _settled_plan(cursor.connection, cur, statement, parameters)
                elif analyze:
                    cur.execute("SAVEPOINT gd_explain")
                    cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
                    plan = cur.fetchone()[0][0]["Plan"]
                    cur.execute("ROLLBACK TO SAVEPOINT gd_explain")
                    cur.execute("RELEASE SAVEPOINT gd_explain")
                else:
                    cur.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
                    plan = cur.fetchone()[0][0]["Plan"]
            found.append((statement, plan))
        return statement, parameters

    event.listen(conn, "before_cursor_execute", hook, retval=True)
    try:
        call()
    finally:
        event.remove(conn, "before_cursor_execute", hook)
    return found


def _numbered(statement: str) -> tuple[str, list[str]]:
    """``%(name)s`` placeholders as ``$n`` (one number per name), ``%%`` as ``%``; and the
    names in the order of their numbers."""
    numbers: dict[str, int] = {}

    def number(m: re.Match[str]) -> str:
        return f"${numbers.setdefault(m.group(1), len(numbers) + 1)}"

    numbered = re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%")
    return numbered, list(numbers)


def _settled_plan(raw: Any, cur: Any, statement: str, parameters: Any) -> dict[str, Any]:
    numbered, names = _numbered(statement)
    cur.execute(f"PREPARE gd_plan_check AS {numbered}")
    try:
        args = ", ".join(f"%({name})s" for name in names)
        explain = psycopg.ClientCursor(raw).mogrify(
            f"EXPLAIN (FORMAT JSON) EXECUTE gd_plan_check({args})", parameters
        )
        for _ in range(6):
            cur.execute(explain)
            plan: dict[str, Any] = cur.fetchone()[0][0]["Plan"]
    finally:
        cur.execute("DEALLOCATE gd_plan_check")
    return plan


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def seq_scans(plan: dict[str, Any], table: str) -> int:
    """How many Seq Scan nodes of ``table`` the plan has."""
    return sum(
        1 for n in nodes(plan) if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == table
    )


def rows_read(plan: dict[str, Any], table: str) -> int:
    """Rows the scans of ``table`` returned (EXPLAIN ANALYZE plans), over all loops."""
    return sum(
        int(n.get("Actual Rows", 0) * n.get("Actual Loops", 1))
        for n in nodes(plan)
        if n.get("Relation Name") == table and "Scan" in n["Node Type"]
    )


def indexes(plan: dict[str, Any]) -> set[str]:
    """Names of the indexes the plan scans (index, index-only and bitmap scans)."""
    return {n["Index Name"] for n in nodes(plan) if "Index Name" in n}
