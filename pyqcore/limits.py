"""Flow control, checked before anything is written: a queue's limits on what reserve leases
(``rate_limit``, ``max_active``, ``group_concurrency``, ``group_rate_limit``), a job's rank
(``priority``, ``group``), and how a queue-wide limit is shared by a partitioned queue's
partitions (each partition is its own slot, so its own reserve script: partition i gets its
share of the limit, and the shares add up to the limit)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from pyqcore.errors import ConfigurationError

MAX_PRIORITY = 1000  # priorities run from -MAX_PRIORITY to MAX_PRIORITY (BAND_ZERO in ranked.lua)
MAX_STARTS = 1_000_000  # most starts per window: the window's log keeps one entry per start
MAX_WINDOW = 7 * 24 * 3600.0  # longest window of a rate limit, in seconds
MAX_CAP = 1_000_000_000  # largest max_active or group_concurrency
MAX_GROUP = 200  # characters in a group's name


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``starts`` job starts (leases) in any window of ``seconds``."""

    starts: int
    seconds: float

    @property
    def window_ms(self) -> int:
        """The window in whole milliseconds (at least 1)."""
        return max(1, round(self.seconds * 1000))

    def share(self, partitions: int, partition: int) -> RateLimit:
        """Partition ``partition``'s part of the limit: the starts split as evenly as
        possible over the same window."""
        return RateLimit(share(self.starts, partitions, partition), self.seconds)


class Rank(NamedTuple):
    """Where an added job waits while ready: its priority and its group (None: no group)."""

    priority: int = 0
    group: str | None = None

    @property
    def plain(self) -> bool:
        """Neither: the job goes to the plain FIFO ready list."""
        return self.priority == 0 and self.group is None


UNRANKED = Rank()  # a plain job: priority 0, no group


def share(total: int, partitions: int, partition: int) -> int:
    """Partition ``partition``'s share of ``total``: even, the first ``total % partitions``
    partitions one more."""
    return total // partitions + (1 if partition < total % partitions else 0)


def _int(what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be an int from {low} to {high}, got {value!r:.80}")
    return value


def check_cap(what: str, value: object, partitions: int = 1) -> int | None:
    """``max_active`` or ``group_concurrency``: None (no limit) or an int >= 1 (>= the
    partition count, so every partition's share is at least 1)."""
    if value is None:
        return None
    return _int(what, value, max(1, partitions), MAX_CAP)


def check_rate_limit(what: str, value: object, partitions: int = 1) -> RateLimit | None:
    """``rate_limit`` or ``group_rate_limit``: None (no limit) or ``(starts, seconds)``, starts
    an int >= 1 (>= the partition count), seconds a number in [0.001, 7 days]."""
    if value is None:
        return None
    if isinstance(value, RateLimit):
        value = (value.starts, value.seconds)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigurationError(f"{what} must be (starts, seconds) or None, got {value!r:.80}")
    starts, seconds = value
    _int(f"{what}'s starts", starts, max(1, partitions), MAX_STARTS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or math.isnan(seconds) or not 0.001 <= seconds <= MAX_WINDOW:
        raise ConfigurationError(f"{what}'s seconds must be a number from 0.001 to "
                                 f"{MAX_WINDOW:g}, got {seconds!r:.80}")
    return RateLimit(starts, float(seconds))


def check_rank(priority: object, group: object) -> Rank:
    """A job's rank: priority an int in [-1000, 1000], group None or a non-empty str of at
    most 200 printable characters without spaces (it is stored in keys' members, where a space
    separates fields)."""
    _int("priority", priority, -MAX_PRIORITY, MAX_PRIORITY)
    if group is not None and (not isinstance(group, str) or not group or len(group) > MAX_GROUP
                              or not group.isprintable() or any(c.isspace() for c in group)):
        raise ConfigurationError(f"group must be None or a non-empty str of at most {MAX_GROUP} "
                                 f"printable characters without spaces, got {group!r:.80}")
    return Rank(priority, group)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """One group of a queue, as ``group_counts()`` reads it: jobs ready, leases held, and
    whether ``pause_group`` paused it (summed over a partitioned queue's partitions)."""

    ready: int = 0
    active: int = 0
    paused: bool = False

    def __add__(self, other: GroupCounts) -> GroupCounts:
        return GroupCounts(self.ready + other.ready, self.active + other.active,
                           self.paused or other.paused)


def group_counts(flow_hash: dict[bytes | str, bytes | str]) -> dict[str, GroupCounts]:
    """The groups in a partition's ``flow`` hash (HGETALL): its fields "ready G", "active G"
    and "paused G" (lua/includes/arm.lua); groups with none of them are not listed."""
    found: dict[str, GroupCounts] = {}
    for raw_field, raw_value in flow_hash.items():
        field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
        kind, _, group = field.partition(" ")
        if kind not in ("ready", "active", "paused") or not group:
            continue  # seq counters, "capped" (internal)
        value = int(raw_value)
        now = found.get(group, GroupCounts())
        found[group] = now + GroupCounts(value if kind == "ready" else 0,
                                         value if kind == "active" else 0,
                                         kind == "paused")
    return found
