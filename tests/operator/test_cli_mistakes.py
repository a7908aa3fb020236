"""An operator's mistakes end ``gen-durable`` with a short message and the documented exit
code (docs/cli.md), never a traceback: through the real entry point, in a subprocess."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from _support.dbutil import DatabaseFactory
from test_cli import cli

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture(scope="module")
def empty_db_url(db_factory: DatabaseFactory) -> Iterator[str]:
    """A database without the gen_durable schema (never migrated), shared by the module."""
    name = db_factory.new_name("empty")
    url = db_factory.create(name)
    yield url
    db_factory.drop(name)


def assert_short_failure(out: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """Exit ``code``, no traceback, a few lines on stderr (click's usage lines + the error)."""
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines and len(lines) <= 4, out.stderr
    assert lines[-1].startswith("Error: "), out.stderr
    return lines


# Every command that opens the database, on one that was never migrated.
@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["show", "1"],
        ["show", "order:42"],
        ["stats"],
        ["why", "1"],
        ["graph", "shop.Checkout"],
        ["audit"],
        ["workers"],
        ["signal", "1", "paid"],
        ["cancel", "1"],
        ["retry", "1"],
        ["pause", "default"],
        ["resume", "default"],
        ["limit", "default", "3"],
        ["prune"],
        ["run", "--queues", "default=1"],
    ],
    ids=lambda args: "-".join(args[:2]),
)
def test_a_missing_schema_is_named_with_how_to_migrate(empty_db_url: str, args: list[str]) -> None:
    [line] = assert_short_failure(cli(*args, dsn=empty_db_url), 1)
    assert "schema 'gen_durable' is not installed" in line
    assert "gen-durable migrate" in line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["run", "--lease", "-1"], "--lease"),
        (["run", "--lease", "0"], "--lease"),
        (["run", "--poll-interval", "0"], "--poll-interval"),
        (["run", "--grace", "-1"], "--grace"),
        (["limit", "default", "0"], "LIMIT"),
        (["limit", "default", "2147483648"], "LIMIT"),
        (["limit", "default", "many"], "LIMIT"),
        (["limit", "", "3"], "QUEUE"),
        (["pause", ""], "QUEUE"),
        (["resume", ""], "QUEUE"),
        (["prune", "--older-than", "-5"], "--older-than"),
        (["why", "1", "--heartbeat-timeout", "0"], "--heartbeat-timeout"),
        # Not a finite number of seconds: click's FloatRange lets NaN and infinity through.
        (["run", "--lease", "nan"], "--lease"),
        (["run", "--poll-interval", "inf"], "--poll-interval"),
        (["run", "--grace", "nan"], "--grace"),
        (["run", "--restart-window", "nan"], "--restart-window"),
        (["prune", "--older-than", "nan"], "--older-than"),
        (["prune", "--older-than", "inf"], "--older-than"),
        (["prune", "--older-than", "1e300"], "--older-than"),
        (["cancel", "--queue", "q", "--older-than", "nan"], "--older-than"),
        (["why", "1", "--heartbeat-timeout", "nan"], "--heartbeat-timeout"),
    ],
    ids=lambda v: "-".join(v[:3]) if isinstance(v, list) else "",
)
def test_usage_errors_exit_2_naming_the_parameter(
    empty_db_url: str, args: list[str], names: str
) -> None:
    lines = assert_short_failure(cli(*args, dsn=empty_db_url), 2)
    assert f"Invalid value for '{names}'" in lines[-1]


@pytest.mark.parametrize("args", [["ls"], ["why", "1"], ["graph", "shop.Checkout"]])
def test_an_unreachable_database_exits_3(args: list[str]) -> None:
    [line] = assert_short_failure(cli(*args, dsn=UNREACHABLE), 3)
    assert "cannot connect" in line
