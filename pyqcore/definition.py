"""What a queue is, apart from how it talks to Redis: its name and settings (class attributes
are the defaults, constructor arguments override them) and its partitions' script calls. The
sync ``pyqcore.BaseQueue`` and the asyncio ``pyqcore.asyncio.BaseQueue`` are both built on it,
so they read settings and build calls the same way, and differ only in how calls are sent.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from pyqcore.backoff import Backoff
from pyqcore.core import Settled
from pyqcore.errors import ConfigurationError, LockNotAcquiredError
from pyqcore.job import Job
from pyqcore.keys import DEFAULT_PREFIX, QueueKeys
from pyqcore.partitions import Partitions
from pyqcore.serializer import MSGPACK, Serializer
from pyqcore.settings import Clock, QueueSettings

if TYPE_CHECKING:
    from typing_extensions import Unpack


class QueueOptions(TypedDict, total=False):
    """The settings a queue's constructor takes; None (or absent) keeps the class default."""

    name: str | None
    max_retries: int | None
    visibility_timeout: float | None
    backoff: Backoff | None
    serializer: Serializer | None
    max_payload_bytes: int | None
    batch_size: int | None
    partitions: int | None
    prefix: str
    clock: Clock
    rng: random.Random | None


class QueueDefinition:
    """A named queue's settings and script calls. Class attributes are the defaults."""

    name: str = ""
    max_retries: int = 3  # retries after the first delivery: at most max_retries + 1 deliveries
    visibility_timeout: float = 30.0  # seconds a delivery is leased before it is reclaimed
    backoff: Backoff = Backoff.exponential()
    serializer: Serializer = MSGPACK
    max_payload_bytes: int = 512 * 1024  # largest encoded job record accepted by add
    batch_size: int = 1000  # most jobs per enqueue script call
    partitions: int = 1  # hash tags (so cluster slots) the queue is spread over

    def __init__(self, **options: Unpack[QueueOptions]) -> None:
        def given(key: str) -> Any:
            value = options.get(key)
            return getattr(self, key) if value is None else value

        self.settings = QueueSettings(
            name=given("name"),
            max_retries=given("max_retries"),
            visibility_timeout=given("visibility_timeout"),
            backoff=given("backoff"),
            serializer=given("serializer"),
            max_payload_bytes=given("max_payload_bytes"),
            batch_size=given("batch_size"),
            partitions=given("partitions"),
            prefix=options.get("prefix", DEFAULT_PREFIX),
            clock=options.get("clock", time.time),
            rng=options.get("rng") or random.Random(),
        )
        s = self.settings
        self.name, self.max_retries, self.backoff = s.name, s.max_retries, s.backoff
        self.visibility_timeout, self.serializer = s.visibility_timeout, s.serializer
        self.max_payload_bytes, self.batch_size = s.max_payload_bytes, s.batch_size
        self.partitions = s.partitions
        self.keys = QueueKeys(s.prefix, s.name)  # a partitioned queue's own keys (item locks)
        self._parts = Partitions(s)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    def wake_keys(self, cluster: bool) -> list[str]:
        """What an idle worker blocks on: every partition's wake list, or on a cluster (where
        one BLPOP cannot span slots) one partition's, in turn."""
        parts = self._parts.reading_order()
        return [p.keys.key("wake") for p in (parts[:1] if cluster else parts)]


def renewed(held: list[Job], reply: Settled) -> int:
    """Move the ``lease_deadline`` of the jobs an extend renewed; returns how many it did."""
    lost = set(reply.refused)
    for job in held:
        if job.id not in lost:
            job.lease_deadline = reply.deadline_ms / 1000.0
    return reply.count


class LockWait:
    """Waiting for an item lock: a fresh token, and how long to sleep while another holder
    has it (LockNotAcquiredError once ``wait`` seconds have passed)."""

    def __init__(self, item: str, wait: float) -> None:
        self.item = item
        self.token = uuid.uuid4().hex
        self._give_up = time.monotonic() + wait

    def pause(self, remaining_ms: int) -> float:
        """Seconds to sleep before asking again; the holder keeps it ``remaining_ms`` more."""
        if time.monotonic() >= self._give_up:
            raise LockNotAcquiredError(f"lock {self.item!r} is held by another holder "
                                       f"for {remaining_ms} ms more")
        return min(0.05, max(remaining_ms, 1) / 1000)


def batch_arguments(
    payloads: Iterable[Any], job_ids: Sequence[str | None] | None,
    partition_keys: Sequence[str | None] | None,
) -> tuple[list[Any], Sequence[str | None], Sequence[str | None]]:
    """add_batch's arguments as three lists of one length (None where not given)."""
    payloads = list(payloads)
    none: list[str | None] = [None] * len(payloads)
    ids = none if job_ids is None else job_ids
    keys = none if partition_keys is None else partition_keys
    if not len(ids) == len(keys) == len(payloads):
        raise ConfigurationError(f"{len(payloads)} payloads with {len(ids)} job_ids and "
                                 f"{len(keys)} partition_keys")
    return payloads, ids, keys


def in_caller_order(chunks: Iterable[list[str]], positions: Iterable[list[int]],
                    count: int) -> list[str]:
    """The ids of each enqueue call put back at their jobs' positions in the caller's batch."""
    result: list[str] = [""] * count
    for chunk, where in zip(chunks, positions, strict=True):
        for job_id, i in zip(chunk, where, strict=True):
            result[i] = job_id
    return result


def as_job_list(jobs: Job | Iterable[Job]) -> list[Job]:
    """One job or many, as a list."""
    return [jobs] if isinstance(jobs, Job) else list(jobs)


def pairs(jobs: list[Job]) -> list[tuple[str, str]]:
    """The (id, lease token) pairs that ack, release and extend send."""
    return [(j.id, j.token) for j in jobs]


def sum_counts(per_part: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counters of several partitions added up, key by key (first-seen key order)."""
    total: dict[str, int] = {}
    for counts in per_part:
        for key, value in counts.items():
            total[key] = total.get(key, 0) + value
    return total
