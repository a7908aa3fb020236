"""The example's ``durable_engine``: the suite's fresh database per test (see conftest.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine


@pytest.fixture
def durable_engine(engine: Engine) -> Engine:
    return engine
