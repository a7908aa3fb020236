"""What the benchmarks print, and the statistics they print.

JSON lines on stdout (:func:`emit`), progress on stderr (:func:`log`), and the reductions
of repeated samples that figures are made of: :func:`median`, :func:`percentile` and
:func:`rounded` (None for a missing or NaN value, as the JSON lines carry it).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from typing import Any

# -- output ----------------------------------------------------------------------------------


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    print(json.dumps(record, default=str), flush=True)


def log(message: str) -> None:
    """Progress on stderr (stdout carries JSON lines only)."""
    print(message, file=sys.stderr, flush=True)


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def rounded(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)
