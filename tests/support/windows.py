"""The sliding-window measure that the rate-limit tests and bench/flow.py share."""

from __future__ import annotations


def most_in_window(starts: list[int], window_ms: int) -> int:
    """The most starts in any closed window of ``window_ms`` (ms times, sorted)."""
    most, first = 0, 0
    for last, at in enumerate(starts):
        while starts[first] < at - window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most
