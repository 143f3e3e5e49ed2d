"""Retry delays: fixed, or exponential with a cap and jitter (to spread retry storms)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyqcore.checks import MAX_DELAY, check_seconds
from pyqcore.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry n (n = 1 after the first failed delivery) in seconds.

    ``base * factor ** (n - 1)``, capped at ``cap``, then spread by ``±jitter`` (a fraction).
    """

    base: float
    factor: float = 1.0
    cap: float | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        check_seconds("backoff base", self.base, high=MAX_DELAY, zero=True)
        if self.cap is not None:
            check_seconds("backoff cap", self.cap, high=MAX_DELAY, zero=True)
            if not self.cap >= self.base:
                raise ConfigurationError(f"backoff cap {self.cap} is below its base {self.base}")
        for name, value, low, high in (("factor", self.factor, 1, 1000),
                                       ("jitter", self.jitter, 0, 1)):
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not low <= value <= high:
                raise ConfigurationError(f"backoff {name} must be a number in [{low}, {high}], "
                                         f"got {value!r}")

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        """The same delay before every retry."""
        return cls(base=seconds)

    @classmethod
    def exponential(
        cls, base: float = 1.0, cap: float = 300.0, jitter: float = 0.1, factor: float = 2.0
    ) -> Backoff:
        """Doubling delays (by default) from ``base`` up to ``cap``, each spread by ``jitter``."""
        return cls(base=base, factor=factor, cap=cap, jitter=jitter)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (>= 1)."""
        exponent = min(max(retry, 1) - 1, 64)  # 2**64 s is far past any cap; avoids overflow
        delay = self.base * self.factor**exponent
        delay = min(delay, MAX_DELAY if self.cap is None else self.cap)
        if self.jitter:
            delay *= 1 + self.jitter * (2 * (rng or random).random() - 1)
        return max(delay, 0.0)
