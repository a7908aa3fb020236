"""Every documented import path keeps working, whatever the package's inner layout.

The names come from the documentation (README, docs/, examples/) and the entry points in
pyproject.toml; a move inside the package that breaks one of them fails here.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

import gen_durable

ROOT = Path(__file__).resolve().parents[2]

DOCUMENTED: dict[str, tuple[str, ...]] = {
    "gen_durable.errors": (
        "DurableError",
        "ConfigurationError",
        "DefinitionError",
        "ValidationError",
        "UnknownClass",
        "InvalidState",
        "InvalidPayload",
        "PayloadTooLarge",
        "NotFound",
        "DuplicateInstance",
        "InvalidTransition",
        "InvalidOutcome",
        "RateLimitedError",
        "ResultTimeout",
        "InstanceFailed",
    ),
    "gen_durable.types": ("JSON", "Status", "Signal", "SignalInfo", "Child", "InstanceSnapshot"),
    "gen_durable.schema": ("install", "check", "needs_upgrade"),
    "gen_durable.migration": ("upgrade", "downgrade", "current", "head"),
    "gen_durable.testing": ("drain", "advance", "reset", "assert_inserted", "assert_signalled"),
    "gen_durable.runner": ("Runner", "DEFAULT_MAX_CHILDREN", "SERVICE_CONNECTIONS"),
    "gen_durable.supervisor": ("Supervisor",),
    "gen_durable.wait": ("result", "wait"),
    "gen_durable.serialization": (
        "set_payload_limit",
        "payload_limit",
        "DEFAULT_PAYLOAD_LIMIT",
        "MAX_ID",
        "MAX_SECONDS",
        "MAX_TEXT_BYTES",
        "converter",
    ),
    "gen_durable.telemetry": ("attach", "detach_default_logger", "attach_default_logger"),
    "gen_durable.events": ("attach", "emit"),
    "gen_durable.faults": ("inject", "hit", "register_error", "InjectedFault", "Rule"),
    "gen_durable.telemetry.otel": ("instrument",),
    "gen_durable.telemetry.prometheus": (),
    "gen_durable.devserver": ("ENV_DSN", "to_sqlalchemy_url", "database_url"),
    "gen_durable.pytest_plugin": (),
    "gen_durable.web": ("create_app", "create_blueprint", "read_only", "loopback_only"),
    "gen_durable.contrib.django": (
        "connection", "insert", "insert_all", "signal", "cancel", "retry", "get"
    ),
    "gen_durable.client.fleet": ("workers", "queues"),
    "gen_durable.client.bulk": ("BulkFilter", "bulk_preview", "bulk_start", "bulk_step"),
    "gen_durable.cli": ("main",),
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_each_documented_module_exports_its_documented_names(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in DOCUMENTED[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_facade_exports_everything_it_lists() -> None:
    missing = [name for name in gen_durable.__all__ if not hasattr(gen_durable, name)]
    assert not missing


def test_every_facade_name_used_in_the_documentation_exists() -> None:
    used: set[str] = set()
    pattern = re.compile(r"^\s*from gen_durable import ([\w, ]+)$", re.M)
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.py")]:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            used.update(name.strip() for name in match.group(1).split(","))
    assert used, "the pattern found no documented imports"
    assert sorted(name for name in used if not hasattr(gen_durable, name)) == []


def test_the_entry_points_resolve() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    targets = [*project["scripts"].values(), *project["entry-points"]["pytest11"].values()]
    for target in targets:
        module, _, attribute = target.partition(":")
        loaded = importlib.import_module(module)
        assert not attribute or callable(getattr(loaded, attribute)), target
