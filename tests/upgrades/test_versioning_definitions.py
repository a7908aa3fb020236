"""Class options of versioned state and step aliases: what a definition may declare, and
the versions its code knows (pure: no database)."""

from __future__ import annotations

from typing import Any

import pytest

from gen_durable import FSM, Done, upgrades_state
from gen_durable.domain import registry, versioning
from gen_durable.errors import DefinitionError


def define(**body: Any) -> Any:
    namespace = {"name": "upg.Defined", "steps": ("a", "b"), **body}
    try:
        return type("Defined", (FSM,), namespace)
    finally:
        registry.forget("upg.Defined")


def up(k: int) -> Any:
    @upgrades_state(from_version=k)
    @staticmethod
    def upgrade(data: Any) -> Any:
        return {**data, f"v{k + 1}": True}

    return upgrade


def test_the_known_versions_are_the_unbroken_chain_below_the_code_s() -> None:
    assert define()._gd_known_versions == (1,)
    assert define(state_version=3, u1=up(1), u2=up(2))._gd_known_versions == (1, 2, 3)
    # Without the upgrade from 1, version 1 rows are unknown (stranded, not misread).
    assert define(state_version=3, u2=up(2))._gd_known_versions == (2, 3)


def test_upgrade_runs_the_chain_and_checks_the_result() -> None:
    cls = define(state_version=3, u1=up(1), u2=up(2))
    assert versioning.upgrade(cls, {"x": 1}, 1) == {"x": 1, "v2": True, "v3": True}
    assert versioning.upgrade(cls, {"x": 1}, 2) == {"x": 1, "v3": True}
    with pytest.raises(versioning.StateUpgradeFailed, match="no upgrade from state version 4"):
        versioning.upgrade(cls, {}, 4)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"state_version": 0}, "state_version must be an int >= 1"),
        ({"state_version": True}, "state_version must be an int >= 1"),
        ({"state_version": 2, "u": up(2)}, "is not below state_version = 2"),
        ({"step_aliases": {"old": "nowhere"}}, "no step 'nowhere'"),
        ({"step_aliases": {"a": "b"}}, "step alias 'a' is a step of the class"),
        ({"step_aliases": {"": "b"}}, "a step alias"),
        ({"step_aliases": ["old"]}, "step_aliases maps old step names"),
    ],
)
def test_bad_declarations_are_definition_errors(body: dict[str, Any], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        define(**body)


def test_from_version_must_be_a_version() -> None:
    with pytest.raises(DefinitionError, match="takes an int >= 1"):
        upgrades_state(from_version=0)


def test_aliases_resolve_to_declared_steps() -> None:
    cls = define(step_aliases={"old": "b"}, a=lambda self, ctx: Done())
    assert [versioning.resolve_step(cls, s) for s in ("a", "old", "gone")] == ["a", "b", None]
    steps, versions = versioning.claim_keys([cls])
    sep = versioning.SEP
    assert steps == [f"upg.Defined{sep}a", f"upg.Defined{sep}b", f"upg.Defined{sep}old"]
    assert versions == [f"upg.Defined{sep}1"]
