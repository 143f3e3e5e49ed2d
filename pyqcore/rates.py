"""Completed jobs per second, from samples of each queue's ``completed`` counter kept over a
window: what ``pyqcore top`` and the web dashboard's chart show (a counter that went down, a
reset, counts as 0)."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Rates:
    """Each queue's ``completed`` counter, sampled over the last ``window`` seconds (the
    sampler and readers may be different threads)."""

    window: float
    samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, at: float, completed: dict[str, int]) -> None:
        """Record each queue's counter at ``at`` (seconds); drop samples past the window, but
        keep two so a rate stays defined."""
        with self.lock:
            for name, value in completed.items():
                kept = self.samples.setdefault(name, deque())
                kept.append((at, value))
                while len(kept) > 2 and at - kept[1][0] >= self.window:
                    kept.popleft()

    def rate(self, name: str) -> float | None:
        """Completed per second over the window, or None before two samples."""
        with self.lock:
            kept = self.samples.get(name)
            if not kept or len(kept) < 2:
                return None
            (t0, c0), (t1, c1) = kept[0], kept[-1]
        return max(0, c1 - c0) / (t1 - t0) if t1 > t0 else None

    def series(self, now: float) -> dict[str, list[tuple[float, float]]]:
        """Per queue: (seconds before ``now``, completed per second since the sample before),
        oldest first."""
        with self.lock:
            return {name: [(now - t1, max(0, c1 - c0) / (t1 - t0))
                           for (t0, c0), (t1, c1) in itertools.pairwise(kept) if t1 > t0]
                    for name, kept in self.samples.items()}
