"""A queue's events as ``queue.events()`` hands them out: one per job and transition, read from
the partition's events stream (``lua/includes/events.lua``), never with payloads or results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

EventKind = Literal["added", "started", "completed", "retried", "dead", "cancelled", "redriven",
                    "purged"]
# What ``queue.events(since=...)`` takes: None (from now), 0 (every event kept), an entry id
# (after it), an aware datetime (from then).
Since = str | int | datetime | None
TERMINAL = frozenset({"completed", "dead", "cancelled"})  # what queue.result() waits for


@dataclass(frozen=True, slots=True)
class Event:
    """One transition of one job: ``kind``; ``attempt`` (the delivery it concerns for
    started, retried, dead, completed; deliveries so far for cancelled and purged; 0 for
    added and redriven); ``time`` (seconds since the epoch, the Redis server's clock: the
    entry id's milliseconds); the ``partition`` whose stream holds it and the stream
    ``entry_id`` (pass it as ``since=`` to read on after it)."""

    kind: EventKind
    job_id: str
    attempt: int
    time: float
    partition: int
    entry_id: str
