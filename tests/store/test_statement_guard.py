"""The statement guard: no subquery of gen_durable's SQL is an uncorrelated cross join.

A subquery whose FROM names, without an alias, a table that a level around it reads is a
second scan of that table, joined to nothing, where a correlation to the outer row was
meant (the all-of wake woke instances on other instances' signals that way). Every
statement built at import and every statement a workload that touches each storage
function sends is parsed by PostgreSQL's parser and checked (:mod:`_support.sqlscope`). A
deliberate self-read uses an alias.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from _support.sqlcapture import Capture, compiled, prebuilt, storage_functions
from _support.sqlscope import Finding, statement_key, uncorrelated_self_reads
from _support.statement_workload import workload
from sqlalchemy import Engine

from gen_durable.store import signals

# The all-of branch of the wake as it was: the innermost EXISTS, two levels below the
# UPDATE, named gd_instances in its own FROM and matched every instance's signals.
OLD_WAKE = """\
UPDATE gen_durable.gd_instances SET status=%(status)s::VARCHAR, \
run_at=coalesce(%(p_now)s::TIMESTAMP WITH TIME ZONE, now()), \
updated_at=coalesce(%(p_now)s::TIMESTAMP WITH TIME ZONE, now()) \
WHERE gen_durable.gd_instances.id = any(%(p_ids)s::BIGINT[]) \
AND gen_durable.gd_instances.status = %(status_1)s::VARCHAR \
AND (NOT gen_durable.gd_instances.await_all AND (EXISTS (SELECT * \nFROM gen_durable.gd_signals \n\
WHERE gen_durable.gd_signals.instance_id = gen_durable.gd_instances.id \
AND gen_durable.gd_signals.consumed_at IS NULL \
AND gen_durable.gd_signals.name = any(gen_durable.gd_instances.await_names))) \
OR gen_durable.gd_instances.await_all AND NOT (EXISTS (SELECT aw.n \n\
FROM unnest(gen_durable.gd_instances.await_names) AS aw(n) \nWHERE NOT (EXISTS (SELECT * \n\
FROM gen_durable.gd_signals, gen_durable.gd_instances \n\
WHERE gen_durable.gd_signals.instance_id = gen_durable.gd_instances.id \
AND gen_durable.gd_signals.consumed_at IS NULL \
AND gen_durable.gd_signals.name = aw.n))))) \
RETURNING gen_durable.gd_instances.id, gen_durable.gd_instances.queue"""


def test_the_checker_flags_the_old_all_of_wake() -> None:
    assert uncorrelated_self_reads(OLD_WAKE) == [
        Finding(
            "gen_durable.gd_instances",
            (
                "UPDATE gen_durable.gd_instances",
                "WHERE: EXISTS",
                "SELECT FROM (function) AS aw",
                "WHERE: EXISTS",
                "SELECT FROM gen_durable.gd_signals, gen_durable.gd_instances",
            ),
        )
    ]


def test_the_checker_passes_the_fixed_wake() -> None:
    fixed = compiled(signals._WAKE)
    assert "EXISTS" in fixed and "await_all" in fixed  # still the statement of the old text
    assert uncorrelated_self_reads(fixed) == []


@pytest.mark.parametrize(
    ("sql", "where"),
    [
        ("UPDATE t SET a = 1 WHERE id IN (SELECT mine.id FROM t AS mine FOR UPDATE)", None),
        ("UPDATE t SET a = 1 WHERE id IN (SELECT id FROM t FOR UPDATE)", "UPDATE t > WHERE: ANY"),
        ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.t = t.id)", None),
        ("SELECT (SELECT max(id) FROM t) FROM t", "SELECT FROM t > select list: EXPR"),
        ("DELETE FROM t WHERE id = ANY(ARRAY(SELECT id FROM t))", "DELETE FROM t > WHERE: ARRAY"),
        ("SELECT * FROM t, LATERAL (SELECT * FROM u, t) s", "SELECT FROM t, (subquery) AS s"),
        ("SELECT * FROM u JOIN t ON EXISTS (SELECT FROM t)", "SELECT FROM u JOIN t > FROM: EXISTS"),
        # each side of a UNION is a level of its own; an INSERT's SELECT cannot see its target
        ("SELECT id FROM t UNION ALL SELECT id FROM t", None),
        ("INSERT INTO t (id) SELECT id FROM t WHERE EXISTS (SELECT FROM u)", None),
        ("INSERT INTO t (id) VALUES (1) RETURNING (SELECT 1 FROM t)", "INSERT INTO t > RETURNING"),
        # a CTE is a scope of its own, checked inside
        ("WITH c AS (SELECT id FROM t) UPDATE t SET a = 1 FROM c WHERE c.id = t.id", None),
        ("WITH c AS (SELECT id FROM t WHERE id IN (SELECT id FROM t)) SELECT * FROM c", "WITH c"),
    ],
)
def test_the_checker_reports_a_bare_self_read_below_the_level_that_reads_the_table(
    sql: str, where: str | None
) -> None:
    found = uncorrelated_self_reads(sql)
    if where is None:
        assert found == []
    else:
        assert [f.table for f in found] == ["t"]
        assert found[0].describe().startswith(f"t at {where}"), found[0].describe()


@pytest.fixture
def capture(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    watched = Capture(engine, monkeypatch)
    yield watched
    watched.close()


# The one storage function whose statement does not go through SQLAlchemy: a LISTEN on the
# notifier's own psycopg connection (a fixed statement, no subquery).
UNSENT = {"notify.listen"}


def test_no_statement_of_gen_durable_reads_a_table_of_an_enclosing_level_unaliased(
    engine: Engine, capture: Capture
) -> None:
    workload(engine)
    quiet = sorted(set(storage_functions()) - capture.senders - UNSENT)
    assert not quiet, f"storage functions the workload never ran (add them to it): {quiet}"
    built = prebuilt()
    assert {"gen_durable.store.signals._WAKE", "gen_durable.store.claims._CLAIM"} <= set(built)
    statements: dict[str, tuple[str, str]] = {}
    for name, sql in built.items():
        statements.setdefault(statement_key(sql), (name, sql))
    for sql, sender in capture.sent.items():
        origin = f"sent by store.{sender}" if sender else "sent outside gen_durable.store"
        statements.setdefault(statement_key(sql), (origin, sql))
    print(f"{len(statements)} distinct statements checked ({len(built)} built at import)")
    problems = [
        f"{origin}: {finding.describe()}\n    {_short(sql)}"
        for origin, sql in statements.values()
        for finding in uncorrelated_self_reads(sql)
    ]
    assert not problems, (
        "subqueries that read a table of an enclosing level without an alias (a cross join "
        "where a correlation was meant; alias a deliberate self-read):\n" + "\n".join(problems)
    )


def _short(sql: str, limit: int = 400) -> str:
    flat = re.sub(r"\s+", " ", sql)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
