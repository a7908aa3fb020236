"""Backoff between attempts of a failing step (retry.py)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gen_durable.domain.retry import Backoff, backoff_delay
from gen_durable.errors import DefinitionError

bases = st.floats(min_value=0, max_value=1e4, allow_nan=False)
factors = st.floats(min_value=1, max_value=10, allow_nan=False)
caps = st.floats(min_value=0, max_value=1e6, allow_nan=False)
jitters = st.floats(min_value=0, max_value=1, allow_nan=False)
attempts = st.integers(min_value=1, max_value=2000)


def test_defaults() -> None:
    b = Backoff()
    assert (b.base, b.factor, b.max, b.jitter) == (1.0, 2.0, 300.0, 0.1)


@pytest.mark.parametrize("field", ["base", "factor", "max", "jitter"])
@pytest.mark.parametrize("value", [-1, -0.5, math.nan, math.inf, "1", None], ids=repr)
def test_options_must_be_finite_non_negative_numbers(field: str, value: object) -> None:
    with pytest.raises(DefinitionError, match=field):
        Backoff(**{field: value})  # type: ignore[arg-type]


def test_jitter_is_a_fraction() -> None:
    with pytest.raises(DefinitionError, match="jitter"):
        Backoff(jitter=1.01)
    assert Backoff(jitter=1).jitter == 1


# --- without jitter: exact shape ------------------------------------------------------


@given(base=bases, factor=factors, cap=caps)
def test_first_attempt_waits_base_capped(base: float, factor: float, cap: float) -> None:
    assert Backoff(base, factor, cap, 0).delay(1) == pytest.approx(min(base, cap))


@given(base=bases, factor=factors, cap=caps, attempt=attempts)
def test_delays_are_non_decreasing_and_capped(
    base: float, factor: float, cap: float, attempt: int
) -> None:
    b = Backoff(base, factor, cap, 0)
    here, after = b.delay(attempt), b.delay(attempt + 1)
    assert 0 <= here <= cap
    assert after >= here


@given(
    base=st.floats(min_value=0.001, max_value=100),
    factor=factors,
    attempt=st.integers(min_value=1, max_value=30),
)
def test_each_attempt_multiplies_by_factor_until_the_cap(
    base: float, factor: float, attempt: int
) -> None:
    b = Backoff(base, factor, max=1e300, jitter=0)
    assert b.delay(attempt + 1) == pytest.approx(b.delay(attempt) * factor, rel=1e-9)


def test_a_known_sequence() -> None:
    b = Backoff(base=0.5, factor=3, max=10, jitter=0)
    assert [b.delay(n) for n in range(1, 6)] == pytest.approx([0.5, 1.5, 4.5, 10, 10])


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_attempts_below_one_wait_like_the_first(attempt: int) -> None:
    b = Backoff(base=2, factor=5, max=100, jitter=0)
    assert b.delay(attempt) == b.delay(1) == 2


@pytest.mark.parametrize("factor", [2.0, 10.0, 1e10])
def test_huge_attempts_do_not_overflow_and_wait_max(factor: float) -> None:
    b = Backoff(base=1.0, factor=factor, max=60, jitter=0)
    assert b.delay(10**6) == 60


def test_zero_base_or_zero_max_never_waits() -> None:
    assert Backoff(base=0, jitter=0.5).delay(7, random.Random(1)) == 0
    assert Backoff(max=0, jitter=0.5).delay(7, random.Random(1)) == 0


def test_factor_one_is_constant() -> None:
    b = Backoff(base=3, factor=1, max=100, jitter=0)
    assert {b.delay(n) for n in range(1, 50)} == {3}


# --- jitter -------------------------------------------------------------------------------


@given(base=bases, factor=factors, cap=caps, jitter=jitters, attempt=attempts, seed=st.integers())
def test_jittered_delay_stays_within_the_spread_of_the_unjittered_one(
    base: float, factor: float, cap: float, jitter: float, attempt: int, seed: int
) -> None:
    centre = Backoff(base, factor, cap, 0).delay(attempt)
    got = Backoff(base, factor, cap, jitter).delay(attempt, random.Random(seed))
    assert got >= 0
    assert centre * (1 - jitter) - 1e-9 <= got <= centre * (1 + jitter) + 1e-9


@given(seed=st.integers(), attempt=attempts)
def test_jitter_is_reproducible_with_a_seeded_rng(seed: int, attempt: int) -> None:
    b = Backoff(base=1, factor=2, max=300, jitter=0.3)
    assert b.delay(attempt, random.Random(seed)) == b.delay(attempt, random.Random(seed))


def test_jitter_spreads_delays_around_the_centre() -> None:
    rng = random.Random(20240601)
    b = Backoff(base=10, factor=2, max=1000, jitter=0.2)
    samples = [b.delay(3, rng) for _ in range(4000)]  # centre 40, spread +-8
    assert min(samples) >= 32 and max(samples) <= 48
    assert len(set(samples)) > 3900
    assert statistics.fmean(samples) == pytest.approx(40, rel=0.01)
    assert min(samples) < 33 and max(samples) > 47  # the whole band is used


def test_mean_delay_is_non_decreasing_with_jitter() -> None:
    rng = random.Random(7)
    b = Backoff(base=1, factor=1.5, max=50, jitter=0.5)
    means = [statistics.fmean(b.delay(n, rng) for _ in range(3000)) for n in range(1, 15)]
    # each mean is within 5 % of its centre, so the trend is upward until the cap
    centres = [min(50, 1.5 ** (n - 1)) for n in range(1, 15)]
    assert means == pytest.approx(centres, rel=0.05)
    assert means[-1] > means[0] * 10


# --- backoff_delay ------------------------------------------------------------------------


@given(attempt=attempts)
def test_backoff_delay_of_a_backoff_stays_in_its_band(attempt: int) -> None:
    b = Backoff(base=1, factor=2, max=120, jitter=0.25)
    centre = Backoff(base=1, factor=2, max=120, jitter=0).delay(attempt)
    assert centre * 0.75 - 1e-9 <= backoff_delay(b, attempt) <= centre * 1.25 + 1e-9


def test_backoff_delay_of_a_callable_passes_the_attempt_and_returns_a_float() -> None:
    seen: list[int] = []

    def linear(attempt: int) -> int:
        seen.append(attempt)
        return 5 * attempt

    value = backoff_delay(linear, 4)
    assert value == 20.0
    assert type(value) is float
    assert seen == [4]
    assert backoff_delay(lambda _: 0, 1) == 0.0


@pytest.mark.parametrize("bad", [-1, -0.1, math.nan, math.inf], ids=repr)
def test_backoff_delay_rejects_a_callable_returning_bad_seconds(bad: float) -> None:
    with pytest.raises(DefinitionError, match="backoff"):
        backoff_delay(lambda _: bad, 1)
