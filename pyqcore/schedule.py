"""A schedule: a job to add to a queue at every due time of a cron expression (in a time zone)
or every N seconds. Its definition is checked here (ConfigurationError before anything is
written) and stored as JSON; its due times are computed here with croniter, in ms since the
epoch on the Redis server's clock (the scripts compare them with ``TIME``).

Catch-up: a scheduler enqueues every due time it finds that is less than ``LATE_GRACE`` late (a
running scheduler is never that late, so while one runs none is skipped); of the due times
older than that, which passed while no scheduler ran, it enqueues only the ``catch_up`` latest
(1 by default: the latest missed run; 0: none).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from pyqcore.checks import check_seconds
from pyqcore.errors import ConfigurationError
from pyqcore.keys import validate_name
from pyqcore.settings import MAX_RETRIES_LIMIT, MAX_VISIBILITY_TIMEOUT

LATE_GRACE_MS = 60_000  # a due time later than this was missed (no scheduler ran)
MAX_CATCH_UP = 1000  # most missed runs one claim enqueues
MAX_EVERY = 366 * 24 * 3600.0
MAX_NAME = 200  # bytes: a run's id is the name and its due time


@dataclass(frozen=True, slots=True)
class Schedule:
    """What a schedule adds, where and when. Times in seconds; ``next_due`` (read back from
    Redis) is when its next run is due, None until it is stored."""

    name: str
    queue: str
    payload: Any = None
    context: Any = None
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    catch_up: int = 1
    max_retries: int | None = None
    timeout: float | None = None
    next_due: datetime | None = None

    def __post_init__(self) -> None:
        validate_name("schedule name", self.name)
        if len(self.name.encode()) > MAX_NAME:
            raise ConfigurationError(f"a schedule name is at most {MAX_NAME} bytes")
        validate_name("queue name", self.queue)
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError("a schedule takes cron= or every=, one of them")
        if self.cron is not None and not (isinstance(self.cron, str)
                                          and croniter.is_valid(self.cron)):
            raise ConfigurationError(f"not a cron expression: {self.cron!r:.80}")
        if self.every is not None:
            check_seconds("every", self.every, high=MAX_EVERY)
            if self.every < 1:
                raise ConfigurationError(f"every must be at least 1 s, got {self.every!r}")
            if self.tz != "UTC":
                raise ConfigurationError("tz= applies to cron schedules (every= counts from "
                                         "the epoch)")
        self.zone()  # a time zone that exists
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int) \
                or not 0 <= self.catch_up <= MAX_CATCH_UP:
            raise ConfigurationError(f"catch_up must be an int from 0 to {MAX_CATCH_UP}, got "
                                     f"{self.catch_up!r}")
        if self.max_retries is not None and (
                isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int)
                or not 0 <= self.max_retries <= MAX_RETRIES_LIMIT):
            raise ConfigurationError(f"max_retries must be an int from 0 to "
                                     f"{MAX_RETRIES_LIMIT} or None, got {self.max_retries!r}")
        if self.timeout is not None:
            check_seconds("timeout", self.timeout, high=MAX_VISIBILITY_TIMEOUT)
        try:
            json.dumps([self.payload, self.context], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"a schedule's payload and context are stored as JSON: "
                                     f"{exc}") from None

    def zone(self) -> ZoneInfo:
        """The time zone its cron expression is read in."""
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(f"unknown time zone {self.tz!r:.80}") from None

    @property
    def expression(self) -> str:
        """Its cron expression ("" for an every= schedule)."""
        return self.cron or ""

    # -- storage --------------------------------------------------------------------------------

    def to_json(self) -> str:
        """The stored definition (the queue and name are in the keys)."""
        fields = asdict(self)
        for key in ("name", "queue", "next_due"):
            del fields[key]
        return json.dumps(fields, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, name: str, queue: str, raw: bytes | str, next_due_ms: int | None
                  ) -> Schedule:
        """A stored definition (ConfigurationError if it is not one)."""
        try:
            fields = json.loads(raw)
            return cls(name, queue, next_due=None if next_due_ms is None else
                       datetime.fromtimestamp(next_due_ms / 1000, timezone.utc), **fields)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"schedule {name!r} has an unreadable definition: "
                                     f"{exc}") from None

    # -- due times ------------------------------------------------------------------------------

    def due_after(self, ms: int) -> int:
        """The first due time strictly after ``ms`` (ms since the epoch)."""
        if self.every is not None:
            step = round(self.every * 1000)
            return (ms // step + 1) * step
        start = datetime.fromtimestamp(ms / 1000, self.zone())
        due = croniter(self.expression, start).get_next(float)
        return math.ceil(due * 1000) if due * 1000 > ms else math.ceil(due * 1000) + 1

    def due_before(self, ms: int, count: int) -> list[int]:
        """Up to ``count`` due times strictly before ``ms``, the latest last."""
        if count <= 0:
            return []
        if self.every is not None:
            step = round(self.every * 1000)
            last = (ms - 1) // step * step
            return [last - i * step for i in range(count - 1, -1, -1) if last - i * step >= 0]
        times = croniter(self.expression, datetime.fromtimestamp(ms / 1000, self.zone()))
        found = [math.ceil(times.get_prev(float) * 1000) for _ in range(count)]
        return sorted(t for t in found if t < ms)

    def runs(self, due_ms: int, now_ms: int) -> tuple[list[int], int]:
        """The runs to enqueue when the schedule is due at ``due_ms`` and it is ``now_ms``,
        and the due time after them (see the module docstring: catch-up)."""
        recent = max(due_ms, now_ms - LATE_GRACE_MS)
        runs = [] if due_ms >= recent else [
            t for t in self.due_before(recent, self.catch_up) if t >= due_ms]
        at = recent if recent == due_ms else self.due_after(recent - 1)
        while at <= now_ms:
            runs.append(at)
            at = self.due_after(at)
        return runs, at

    def run_id(self, due_ms: int) -> str:
        """A run's job id: the schedule's name and its due time (UTC), so each due time is one
        job, whichever scheduler enqueues it."""
        when = datetime.fromtimestamp(due_ms / 1000, timezone.utc)
        return f"{self.name}@{when.strftime('%Y-%m-%dT%H:%M:%S')}.{due_ms % 1000:03d}Z"
