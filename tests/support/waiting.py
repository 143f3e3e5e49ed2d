"""Awaiting a condition in tests: poll it until it holds, never sleep a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "",
             interval: float = 0.01) -> None:
    """Poll ``condition`` every ``interval`` s until it is true; fail the test naming ``what``
    (or the condition) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)
