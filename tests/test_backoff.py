"""Backoff: the delay schedule, its cap, bounded jitter, and refused settings."""

from __future__ import annotations

import random

import pytest

from pyqcore import Backoff, ConfigurationError


def test_fixed_delay_is_the_same_for_every_retry() -> None:
    assert [Backoff.fixed(2.5).delay(n) for n in (1, 2, 10)] == [2.5, 2.5, 2.5]


def test_exponential_doubles_up_to_the_cap() -> None:
    backoff = Backoff.exponential(base=1, cap=10, jitter=0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert backoff.delay(10_000) == 10  # no overflow on absurd attempt numbers


def test_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff.exponential(base=10, cap=10, jitter=0.1)
    rng = random.Random(7)
    delays = [backoff.delay(1, rng) for _ in range(1000)]
    assert min(delays) >= 9 and max(delays) <= 11
    assert max(delays) - min(delays) > 1  # it does spread


@pytest.mark.parametrize("kwargs", [{"base": -1}, {"base": 1, "factor": 0.5},
                                    {"base": 5, "cap": 1}, {"base": 1, "jitter": 2}])
def test_bad_backoff_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)
