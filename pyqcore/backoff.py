"""Retry delays: fixed, or exponential with a cap and jitter (to spread retry storms)."""

from __future__ import annotations

import random
from dataclasses import dataclass

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
        if not self.base >= 0:
            raise ConfigurationError(f"backoff base must be >= 0 seconds, got {self.base}")
        if not self.factor >= 1:
            raise ConfigurationError(f"backoff factor must be >= 1, got {self.factor}")
        if self.cap is not None and not self.cap >= self.base:
            raise ConfigurationError(f"backoff cap {self.cap} is below its base {self.base}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"backoff jitter must be in [0, 1], got {self.jitter}")

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
        if self.cap is not None:
            delay = min(delay, self.cap)
        if self.jitter:
            delay *= 1 + self.jitter * (2 * (rng or random).random() - 1)
        return max(delay, 0.0)
