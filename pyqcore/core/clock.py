"""The queue's one clock, as the Python side sees it, without I/O: the Redis server's time
(``TIME``) when a flow must show an age or pick a cutoff, or a test's ``ManualClock``. The
scripts read the server's clock themselves; nothing here feeds a script the time."""

from __future__ import annotations

from typing import Any

from pyqcore.core.effects import Command, Flow
from pyqcore.testing import ManualClock


def time_ms(reply: Any) -> int:
    """A ``TIME`` reply (seconds, microseconds; as ints or bytes) in ms since the epoch."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def time_command() -> Command:
    """``TIME``, parsed to ms."""
    return Command(("TIME",), time_ms)


def server_now_ms(clock: ManualClock | None) -> Flow[int]:
    """The queue's now in ms: the server's (one round trip), or a test's ManualClock's."""
    if clock is not None:
        return clock.now_ms()
    now: int = yield time_command()
    return now
