"""A queue's settings, validated once: bad values fail at construction with ConfigurationError."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyqcore.backoff import Backoff
from pyqcore.checks import check_seconds
from pyqcore.errors import ConfigurationError, NonRetryableError
from pyqcore.keys import DEFAULT_PREFIX, validate_name
from pyqcore.limits import RateLimit, check_cap, check_rate_limit, share
from pyqcore.serializer import MSGPACK, Serializer
from pyqcore.testing import ManualClock

MAX_RETRIES_LIMIT = 10_000
MAX_VISIBILITY_TIMEOUT = 7 * 24 * 3600.0
MAX_KEEP_COMPLETED = 366 * 24 * 3600.0  # seconds: a year
MAX_KEEP_COUNT = 100_000_000
MAX_BATCH = 10_000  # jobs per script call: keeps every call far below Redis's busy threshold
MAX_PARTITIONS = 1024
MAX_READY_LIMIT = 2**53 - 1  # the largest integer the enqueue script reads exactly
MAX_EVENTS_MAXLEN = 10**9  # the events stream's largest bound


def _number(what: str, value: object, low: float, high: float, *, integer: bool) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigurationError(f"{what} must be {'an int' if integer else 'a number'}, "
                                 f"got {value!r}")
    if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigurationError(f"{what} must be between {low} and {high}, got {value!r}")


def exception_types(what: str, value: object) -> tuple[type[BaseException], ...]:
    """An exception class, or an iterable of them, as a tuple (for ``isinstance``); a
    ConfigurationError for anything else."""
    types = (value,) if isinstance(value, type) else value
    if isinstance(types, str | bytes) or not isinstance(types, Iterable):
        types = (types,)
    listed = tuple(types)
    for t in listed:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise ConfigurationError(f"{what} takes exception classes, got {t!r:.80}")
    return listed


def check_clock(clock: object) -> ManualClock | None:
    """``clock`` if it is None (the server's clock: production) or a test's ManualClock; a
    ConfigurationError for anything else (``time.time`` included), so no queue runs on a
    client's clock."""
    if clock is not None and not isinstance(clock, ManualClock):
        raise ConfigurationError(
            f"clock= takes a pyqcore.testing.ManualClock (tests only), got {clock!r:.80}: a "
            "queue's clock is the Redis server's")
    return clock


class ServerOffset:
    """How far the Redis server's clock is ahead of this process's, in ms, as a queue's
    announcement measured it (0 until then). It only dates the records a producer writes (an
    informational enqueue time no script reads)."""

    __slots__ = ("ms",)

    def __init__(self) -> None:
        self.ms = 0

    def learn(self, server_ms: int, sent: float, received: float) -> None:
        """Set the offset from a TIME reply read between ``sent`` and ``received`` (local
        seconds): the server read its clock about halfway."""
        self.ms = server_ms - round((sent + received) * 500)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Everything that shapes a queue's script calls; times in seconds."""

    name: str
    max_retries: int = 3
    visibility_timeout: float = 30.0
    backoff: Backoff = field(default_factory=Backoff.exponential)
    serializer: Serializer = MSGPACK
    max_payload_bytes: int = 512 * 1024
    batch_size: int = 1000
    partitions: int = 1
    max_ready: int | None = None  # most jobs waiting (ready + delayed) per partition, or None
    prefix: str = DEFAULT_PREFIX
    clock: ManualClock | None = None  # None: the server's (tests pass a ManualClock)
    rng: random.Random = field(default_factory=random.Random)
    tracing: bool = False  # OpenTelemetry: trace context in each job, a span per run
    timeout: float | None = None  # seconds a handler run may take (None: no limit)
    retry_on: tuple[type[BaseException], ...] | None = None  # None: every exception retries
    dead_on: tuple[type[BaseException], ...] = ()  # these bury the job at once
    keep_completed: float = 0.0  # seconds a completed (or cancelled) job is kept (0: no bound)
    keep_completed_count: int = 0  # most completed and cancelled jobs kept (0: no bound)
    store_results: bool = False  # keep each completed job's handler return value
    events: bool = False  # one stream entry per transition (lua/includes/events.lua)
    events_maxlen: int = 10_000  # the stream's bound per partition (XADD MAXLEN ~)
    # Flow control (pyqcore.limits), decided inside reserve for the whole fleet; None: none.
    rate_limit: RateLimit | None = None  # given as (starts, seconds)
    max_active: int | None = None
    group_concurrency: int | None = None
    group_rate_limit: RateLimit | None = None  # given as (starts, seconds)
    offset: ServerOffset = field(default_factory=ServerOffset, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_name("queue name", self.name)
        validate_name("prefix", self.prefix)
        check_clock(self.clock)
        _number("max_retries", self.max_retries, 0, MAX_RETRIES_LIMIT, integer=True)
        _number("visibility_timeout", self.visibility_timeout, 0.001, MAX_VISIBILITY_TIMEOUT,
                integer=False)
        if self.timeout is not None:
            check_seconds("timeout", self.timeout, high=MAX_VISIBILITY_TIMEOUT)
        _number("max_payload_bytes", self.max_payload_bytes, 1, 512 * 1024 * 1024, integer=True)
        _number("batch_size", self.batch_size, 1, MAX_BATCH, integer=True)
        _number("partitions", self.partitions, 1, MAX_PARTITIONS, integer=True)
        # A queue-wide limit is shared by the partitions: each gets at least 1.
        object.__setattr__(self, "rate_limit",
                           check_rate_limit("rate_limit", self.rate_limit, self.partitions))
        check_cap("max_active", self.max_active, self.partitions)
        check_cap("group_concurrency", self.group_concurrency)
        object.__setattr__(self, "group_rate_limit",
                           check_rate_limit("group_rate_limit", self.group_rate_limit))
        if not isinstance(self.tracing, bool):
            raise ConfigurationError(f"tracing must be True or False, got {self.tracing!r}")
        if self.retry_on is not None:
            object.__setattr__(self, "retry_on", exception_types("retry_on", self.retry_on))
        object.__setattr__(self, "dead_on", exception_types("dead_on", self.dead_on))
        if self.max_ready is not None:
            _number("max_ready", self.max_ready, 1, MAX_READY_LIMIT, integer=True)
        _number("keep_completed", self.keep_completed, 0, MAX_KEEP_COMPLETED, integer=False)
        _number("keep_completed_count", self.keep_completed_count, 0, MAX_KEEP_COUNT,
                integer=True)
        if not isinstance(self.store_results, bool):
            raise ConfigurationError(f"store_results must be True or False, got "
                                     f"{self.store_results!r}")
        if not isinstance(self.events, bool):
            raise ConfigurationError(f"events must be True or False, got {self.events!r}")
        _number("events_maxlen", self.events_maxlen, 1, MAX_EVENTS_MAXLEN, integer=True)
        if self.store_results and not self.keeps_completed:
            raise ConfigurationError("store_results=True keeps results with completed jobs: "
                                     "give keep_completed (seconds) or keep_completed_count")
        if not isinstance(self.backoff, Backoff):
            raise ConfigurationError(f"backoff must be a pyqcore.Backoff, got {self.backoff!r}")
        if not (callable(getattr(self.serializer, "dumps", None))
                and callable(getattr(self.serializer, "loads", None))):
            raise ConfigurationError("serializer must have dumps(obj) -> bytes and loads(bytes)")

    @property
    def keeps_completed(self) -> bool:
        """Whether completed jobs are kept (acks go through complete.lua instead of ack.lua)."""
        return self.keep_completed > 0 or self.keep_completed_count > 0

    @property
    def events_level(self) -> int:
        """What the scripts write to the events stream: 2 every transition (``events=True``),
        1 the terminal ones only (``store_results``: ``queue.result()`` waits on them), 0
        nothing (the scripts are sent no stream at all)."""
        return 2 if self.events else 1 if self.store_results else 0

    def retries(self, error: BaseException) -> bool:
        """Whether a delivery that failed with ``error`` may be retried (attempts allowing):
        not a ``NonRetryableError``, nor one of ``dead_on``, and one of ``retry_on`` when that
        is set."""
        if isinstance(error, (NonRetryableError, *self.dead_on)):
            return False
        return self.retry_on is None or isinstance(error, self.retry_on)

    @property
    def max_attempts(self) -> int:
        """Deliveries allowed per job: the first one plus ``max_retries``."""
        return self.max_retries + 1

    def limits_of(self, partition: int) -> tuple[int, int, int, int, int, int]:
        """Reserve's flow-control ARGV for one partition (0 = no limit): max_active,
        rate_limit's starts and window (ms), group_concurrency, group_rate_limit's starts and
        window. A queue-wide limit is split over the partitions (``pyqcore.limits.share``)."""
        parts, rate, group_rate = self.partitions, self.rate_limit, self.group_rate_limit
        rate = rate.share(parts, partition) if rate else None
        return (share(self.max_active, parts, partition) if self.max_active else 0,
                rate.starts if rate else 0, rate.window_ms if rate else 0,
                self.group_concurrency or 0,
                group_rate.starts if group_rate else 0, group_rate.window_ms if group_rate else 0)

    @property
    def visibility_ms(self) -> int:
        """The lease length in milliseconds."""
        return max(1, round(self.visibility_timeout * 1000))

    def now(self) -> float:
        """The queue's time in seconds as this process knows it without asking the server: its
        own clock corrected by the server's offset (or the test's clock). For measures such as
        how long a job waited; the scripts read the server's clock themselves."""
        if self.clock is not None:
            return self.clock.now
        return time.time() + self.offset.ms / 1000

    def stamp_ms(self) -> int:
        """The enqueue time a record carries, in ms: this process's clock corrected by the
        server's offset (or the test's clock). Informational: no script reads it."""
        if self.clock is not None:
            return self.clock.now_ms()
        return int(time.time() * 1000) + self.offset.ms
