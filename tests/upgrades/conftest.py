"""Each test defines its versions of ``upg.Signup`` afresh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gen_durable.domain import registry


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    registry.forget("upg.Signup")
