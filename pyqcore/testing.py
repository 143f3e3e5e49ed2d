"""Test-only helpers. Nothing in production uses this module.

``ManualClock``: a clock a test moves by hand. In production the queue's only clock is the Redis
server's (every script that needs the time reads ``TIME``); a queue or manager built with
``clock=ManualClock(...)`` loads a variant of the scripts instead, whose clock takes the time
from an extra first ARGV entry that the call layer adds (``lua/testing/manual_clock.lua``), so
leases, delays, backoff and dead-letter ages follow the test's clock exactly. Only this class
is accepted as ``clock=``: a plain callable such as ``time.time`` is refused, so production code
cannot slip back to a client's clock.
"""

from __future__ import annotations

import math

DEFAULT_START = 1_800_000_000.0  # seconds since the epoch: 2027-01-15, clear of any real now


class ManualClock:
    """Seconds since the epoch that change only when the test says so."""

    def __init__(self, start: float = DEFAULT_START) -> None:
        self.now = float(start)

    def __repr__(self) -> str:
        return f"ManualClock({self.now!r})"

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (or back, for a negative value)."""
        if not math.isfinite(seconds):
            raise ValueError(f"cannot advance a clock by {seconds!r}")
        self.now += seconds

    def now_ms(self) -> int:
        """The time the scripts get, in whole milliseconds."""
        return round(self.now * 1000)
