"""Finds subqueries that re-read, unaliased, a table an enclosing level of the statement reads.

SQLAlchemy correlates a subquery only to the SELECT (or UPDATE/DELETE) right around it: one
level further in, ``gd_instances.id`` is rendered as a FROM item of the inner subquery
itself, and the condition that was meant to tie the subquery to the outer row ties it to
every row of a second, uncorrelated scan instead (a cross join). In the SQL that shows as
a subquery whose FROM names, without an alias, a table an enclosing level already reads.
A deliberate self-read (locking a batch of ids with SKIP LOCKED, counting rows of the
same table) says so with an alias, and is not reported.

The statement is parsed by PostgreSQL's own parser (``pglast``, libpg_query). Levels:
each SELECT, UPDATE, DELETE or INSERT is one; a subquery anywhere below it — in WHERE,
the select list, SET, RETURNING, FROM (``RangeSubselect``, lateral or not), EXISTS, IN,
``ANY(ARRAY(...))`` — is a nested level. An UPDATE's or DELETE's target counts as read by
its level; an INSERT's only for its ON CONFLICT and RETURNING clauses (its SELECT cannot
see it). The two sides of a UNION are side by side, not nested. A CTE's body is a scope
of its own (it cannot correlate to the statement that uses it), but is checked inside.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from pglast import ast, parse_sql
from pglast.parser import fingerprint

_STATEMENTS = (ast.SelectStmt, ast.UpdateStmt, ast.DeleteStmt, ast.InsertStmt)
_CLAUSES = {
    "targetList": "select list",
    "whereClause": "WHERE",
    "fromClause": "FROM",
    "usingClause": "USING",
    "havingClause": "HAVING",
    "returningClause": "RETURNING",
    "returningList": "RETURNING",
    "onConflictClause": "ON CONFLICT",
    "sortClause": "ORDER BY",
    "groupClause": "GROUP BY",
    "limitCount": "LIMIT",
    "limitOffset": "OFFSET",
    "valuesLists": "VALUES",
    "selectStmt": "SELECT",
}
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|__\[POSTCOMPILE_(\w+)\]")


class Finding(NamedTuple):
    """A subquery that names ``table`` unaliased while a level around it reads it."""

    table: str
    path: tuple[str, ...]
    """Each level from the statement's top to the offending subquery, with the clause
    that leads into it (``UPDATE gd_instances``, ``WHERE``, ``EXISTS``, ``SELECT FROM …``)."""

    def describe(self) -> str:
        return f"{self.table} at {' > '.join(self.path)}"


def as_postgres(sql: str) -> str:
    """Driver SQL (psycopg's ``%(name)s``, ``%%``, SQLAlchemy's postcompile markers) as
    text PostgreSQL's parser takes (``$n``, ``%``)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return f"${numbers.setdefault(name, len(numbers) + 1)}"

    return _PLACEHOLDER.sub(number, sql).replace("%%", "%")


def statement_key(sql: str) -> str:
    """One key per statement shape (constants and parameters ignored)."""
    return str(fingerprint(as_postgres(sql)))


def uncorrelated_self_reads(sql: str) -> list[Finding]:
    """Every subquery of ``sql`` (driver SQL) that re-reads an enclosing level's table
    without an alias."""
    found: list[Finding] = []
    for raw in parse_sql(as_postgres(sql)):
        _node(raw.stmt, frozenset(), (), "", found)
    return found


def _name(rv: ast.RangeVar) -> str:
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def _unaliased(rv: ast.RangeVar) -> bool:
    return rv.alias is None or rv.alias.aliasname == rv.relname


def _enum(value: Any) -> str:
    return str(getattr(value, "name", value))


def _from_items(items: Any) -> Iterator[ast.RangeVar]:
    """The tables a FROM list reads at its own level (joins walked, subqueries not)."""
    for item in items or ():
        if isinstance(item, ast.RangeVar):
            yield item
        elif isinstance(item, ast.JoinExpr):
            yield from _from_items((item.larg, item.rarg))


def _source(item: Any) -> str:
    """A FROM item as the path shows it."""
    if isinstance(item, ast.RangeVar):
        return _name(item) + ("" if _unaliased(item) else f" AS {item.alias.aliasname}")
    if isinstance(item, ast.JoinExpr):
        return f"{_source(item.larg)} JOIN {_source(item.rarg)}"
    alias = getattr(item, "alias", None)
    what = "function" if isinstance(item, ast.RangeFunction) else "subquery"
    return f"({what}) AS {alias.aliasname}" if alias is not None else f"({what})"


def _target(stmt: Any) -> list[ast.RangeVar]:
    """An UPDATE's or DELETE's table: read by its own level."""
    return [stmt.relation] if isinstance(stmt, ast.UpdateStmt | ast.DeleteStmt) else []


def _from_list(stmt: Any) -> list[Any]:
    return [*(getattr(stmt, "fromClause", None) or ()), *(getattr(stmt, "usingClause", None) or ())]


def _label(stmt: Any) -> str:
    names = ", ".join(_source(item) for item in _target(stmt) + _from_list(stmt))
    if isinstance(stmt, ast.UpdateStmt):
        return f"UPDATE {names}"
    if isinstance(stmt, ast.DeleteStmt):
        return f"DELETE FROM {names}"
    if isinstance(stmt, ast.InsertStmt):
        return f"INSERT INTO {_name(stmt.relation)}"
    return f"SELECT FROM {names}" if names else "SELECT"


def _node(
    node: Any, around: frozenset[str], path: tuple[str, ...], via: str, found: list[Finding]
) -> None:
    """Walk ``node``: ``around`` are the tables the levels around it read, ``via`` how it
    was reached from the innermost of them (not yet written into ``path``)."""
    if isinstance(node, tuple | list):
        for item in node:
            _node(item, around, path, via, found)
        return
    if not isinstance(node, ast.Node):
        return
    if isinstance(node, _STATEMENTS):
        _statement(node, around, (*path, via) if via else path, found)
        return
    if isinstance(node, ast.CommonTableExpr):
        # A CTE's body cannot correlate to the statement around it: a scope of its own.
        _node(node.ctequery, frozenset(), (*path, f"WITH {node.ctename}"), "", found)
        return
    if isinstance(node, ast.SubLink):
        kind = _enum(node.subLinkType).removesuffix("_SUBLINK")
        via = f"{via}: {kind}" if via else kind
    elif isinstance(node, ast.RangeSubselect):
        kind = "LATERAL subquery" if node.lateral else "subquery"
        via = f"{via}: {kind}" if via else kind
    for field in node.__slots__:
        _node(getattr(node, field), around, path, via, found)


def _statement(
    stmt: Any, around: frozenset[str], path: tuple[str, ...], found: list[Finding]
) -> None:
    if stmt.withClause is not None:
        _node(stmt.withClause, frozenset(), path, "", found)
    if isinstance(stmt, ast.SelectStmt) and stmt.larg is not None:
        # UNION/INTERSECT/EXCEPT: each side is a level of its own, side by side.
        op = _enum(stmt.op).removeprefix("SETOP_")
        for side in (stmt.larg, stmt.rarg):
            _statement(side, around, (*path, op), found)
        return
    named = list(_from_items(_from_list(stmt)))
    here = (*path, _label(stmt))
    found.extend(Finding(_name(rv), here) for rv in named if _unaliased(rv) and _name(rv) in around)
    inner = around | {_name(rv) for rv in _target(stmt) + named}
    if isinstance(stmt, ast.InsertStmt):
        # Its SELECT (or VALUES) cannot see the target; ON CONFLICT and RETURNING can.
        inner = around | {_name(stmt.relation)}
    for field in stmt.__slots__:
        if field in ("withClause", "relation"):
            continue
        seen = around if field in ("selectStmt", "valuesLists") else inner
        _node(getattr(stmt, field), seen, here, _CLAUSES.get(field, field), found)
