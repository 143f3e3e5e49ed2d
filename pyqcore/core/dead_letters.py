"""The dead-letter queue's flows, without I/O: the jobs that failed for good, across every queue
of a prefix.

Each queue keeps its own dead set (``P:{Q}:dead``), so a redrive is one atomic script in the
queue's slot. The DLQ needs nothing but a queue's name: it works for queues this process never
registered (their records are decoded with the default serializer). Every script call handles
at most ``CHUNK`` jobs, so a dead set of any size is paged, purged and redriven in bounded
steps. Ages are the server's: the scripts turn an age into a cutoff with the server's clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pyqcore.core.calls import DeadRow, QueueCalls, Redriven
from pyqcore.core.clock import server_now_ms
from pyqcore.core.effects import Command, Flow
from pyqcore.core.registry import Registry
from pyqcore.errors import ConfigurationError, DeserializationError
from pyqcore.job import DeadLetterItem, ErrorInfo, decode_record

CHUNK = 1000  # most dead jobs one purge, redrive or peek_dead call handles
Progress = Callable[[int], None]  # told how many jobs each bounded call moved


def _ignore(moved: int) -> None:
    """No progress report wanted."""


@dataclass(frozen=True, slots=True)
class DeadLetterReport:
    """What one ``process_dead_letter_queue`` pass did."""

    purged: int = 0
    redriven: int = 0
    kept_back: int = 0  # young, but already redriven max_redrives times: left dead


class DeadLetters:
    """Purges old dead jobs, redrives young ones to their original queue, lists them."""

    def __init__(self, registry: Registry, *, max_redrives: int = 3) -> None:
        self.registry = registry
        self.max_redrives = max_redrives

    @property
    def max_redrives(self) -> int:
        """How often ``process_dead_letter_queue`` redrives one job before leaving it dead."""
        return self._max_redrives

    @max_redrives.setter
    def max_redrives(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"max_redrives must be an int >= 0, got {value!r}")
        self._max_redrives = value

    def items(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> Flow[list[DeadLetterItem]]:
        """Dead jobs, oldest first within each queue (skipping ``offset`` per queue): of one
        queue, or of all known queues, up to ``limit``."""
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"{name} must be an int >= 0, got {value!r}")
        found: list[DeadLetterItem] = []
        for name in (yield from self.registry.names(queue)):
            if len(found) >= limit:
                break
            parts = yield from self.registry.parts_of(name)
            rows = yield from _oldest(parts, offset, limit - len(found))
            found += [_item(name, part, row) for part, row in rows]
        return found

    def get(self, queue: str, job_id: str) -> Flow[DeadLetterItem | None]:
        """Dead job ``job_id`` of ``queue``, or None if it is not dead (one round trip over
        the queue's partitions)."""
        parts = yield from self.registry.parts_of(queue)
        found = yield [part.peek_dead(0, 1, ids=[job_id]) for part in parts]
        for part, rows in zip(parts, found, strict=True):
            if rows:
                return _item(queue, part, rows[0])
        return None

    def count(self, queue: str | None = None, *, max_age: float = 0.0) -> Flow[int]:
        """How many jobs are dead, in one queue or in all known queues; with ``max_age``, only
        those dead for longer than that many seconds by the server's clock (what
        ``purge(max_age=...)`` would delete)."""
        age = _age_ms(max_age)
        parts: list[QueueCalls] = []
        for name in (yield from self.registry.names(queue)):
            parts += yield from self.registry.parts_of(name)
        if not parts:
            return 0
        if age == 0:
            return sum(c["dead"] for c in (yield [part.counts() for part in parts]))
        before = (yield from server_now_ms(self.registry.clock)) - age
        counted: list[int] = yield [Command(("ZCOUNT", part.keys.key("dead"), "-inf",
                                             f"({before}")) for part in parts]
        return sum(counted)

    def process_dead_letter_queue(self, max_age: float = 4 * 3600) -> Flow[DeadLetterReport]:
        """In every known queue: delete dead jobs older than ``max_age`` seconds, and redrive
        younger ones to their queue (unless already redriven ``max_redrives`` times)."""
        age = _age_ms(max_age)
        purged = redriven = kept = 0
        for name in (yield from self.registry.names(None)):
            for part in (yield from self.registry.parts_of(name)):
                purged += yield from _purge_older(part, age)
                moved, kept_back = yield from _redrive_scan(part, self.max_redrives, age)
                redriven, kept = redriven + moved, kept + kept_back
        return DeadLetterReport(purged, redriven, kept)

    def reprocess_item(self, item: DeadLetterItem, *, force: bool = False) -> Flow[bool]:
        """Send one dead job back to its original queue under its id, attempts reset. Refused
        (False) when it is no longer dead, or was redriven ``max_redrives`` times (unless
        ``force``)."""
        parts = yield from self.registry.parts_of(item.queue)
        if not 0 <= item.partition < len(parts):
            raise ConfigurationError(f"dead job {item.job_id} names partition {item.partition},"
                                     f" but queue {item.queue!r} has {len(parts)}")
        limit = -1 if force else self.max_redrives
        redriven: Redriven = yield parts[item.partition].redrive(limit, ids=[item.job_id])
        return redriven.redriven == 1

    def requeue(self, queue: str, ids: list[str] | None = None, *, force: bool = True,
                on_progress: Progress | None = None) -> Flow[int]:
        """Redrive ``ids`` (or every dead job) of ``queue``; an operator's requeue ignores the
        redrive limit unless ``force`` is False. Returns how many went back to ready;
        ``on_progress`` hears how many each bounded call moved (a progress bar)."""
        limit = -1 if force else self.max_redrives
        told = on_progress or _ignore
        moved = 0
        for part in (yield from self.registry.parts_of(queue)):
            if ids is None:
                moved += (yield from _redrive_scan(part, limit, -1, told))[0]
                continue
            for chunk in _chunks(ids):  # an id that is not dead here is skipped
                n = (yield part.redrive(limit, ids=chunk)).redriven
                told(n)
                moved += n
        return moved

    def purge(self, queue: str | None = None, *, max_age: float = 0.0,
              ids: list[str] | None = None, on_progress: Progress | None = None) -> Flow[int]:
        """Delete dead jobs for good: ``ids`` of ``queue``, or those older than ``max_age``;
        ``on_progress`` hears how many each round trip deleted (a progress bar)."""
        told = on_progress or _ignore
        if ids is not None:
            if queue is None:
                raise ConfigurationError("purging by ids needs the queue they belong to")
            parts = yield from self.registry.parts_of(queue)
            purged = sum((yield [part.purge(ids=chunk) for part in parts
                                 for chunk in _chunks(ids)]))
            told(purged)
            return purged
        age = _age_ms(max_age)
        total = 0
        for name in (yield from self.registry.names(queue)):
            for part in (yield from self.registry.parts_of(name)):
                total += yield from _purge_older(part, age, told)
        return total


def _age_ms(max_age: float) -> int:
    if isinstance(max_age, bool) or not isinstance(max_age, int | float) or not max_age >= 0:
        raise ConfigurationError(f"max_age must be a number of seconds >= 0, got {max_age!r}")
    return round(max_age * 1000)


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def _oldest(parts: list[QueueCalls], offset: int, limit: int
            ) -> Flow[list[tuple[QueueCalls, DeadRow]]]:
    """Rows ``offset`` to ``offset + limit`` of the partitions' dead sets merged by the time
    each job died, read in pages of at most CHUNK rows per call."""
    if limit == 0:
        return []
    if len(parts) == 1:  # one dead set: the server skips the offset itself
        part, rows = parts[0], list[DeadRow]()
        while len(rows) < limit:
            want = min(CHUNK, limit - len(rows))
            page = yield part.peek_dead(offset + len(rows), want)
            rows += page
            if len(page) < want:
                break
        return [(part, row) for row in rows]
    # Several: merge, each partition read from its start in pages (at most offset + limit rows
    # of each are ever needed).
    wanted = offset + limit
    cursors = {i: 0 for i in range(len(parts))}
    pages: dict[int, list[DeadRow]] = {}
    heap: list[tuple[int, int, int]] = []  # (died_ms, partition, index within its page)

    def fill(i: int) -> Flow[None]:
        page = yield parts[i].peek_dead(cursors[i], min(CHUNK, wanted))
        cursors[i] += len(page)
        pages[i] = page
        if page:
            heapq.heappush(heap, (page[0].died_ms, i, 0))

    for i in range(len(parts)):
        yield from fill(i)
    merged: list[tuple[QueueCalls, DeadRow]] = []
    while heap and len(merged) < wanted:
        _, i, j = heapq.heappop(heap)
        merged.append((parts[i], pages[i][j]))
        if j + 1 < len(pages[i]):
            heapq.heappush(heap, (pages[i][j + 1].died_ms, i, j + 1))
        elif len(pages[i]) == min(CHUNK, wanted):
            yield from fill(i)
    return merged[offset:]


def _redrive_scan(part: QueueCalls, limit: int, max_age_ms: int,
                  told: Progress | None = None) -> Flow[tuple[int, int]]:
    """Redrive every dead job of a partition dead for at most ``max_age_ms`` (-1: any), in
    bounded batches; returns (redriven, kept back at their limit)."""
    moved = kept = 0
    while True:
        r = yield part.redrive(limit, max_age_ms, kept, CHUNK)
        (told or _ignore)(r.redriven)
        moved, kept = moved + r.redriven, kept + r.kept_back
        if r.examined < CHUNK:
            return moved, kept


def _purge_older(part: QueueCalls, age_ms: int, told: Progress | None = None
                 ) -> Flow[int]:
    """Purge a partition's jobs dead for longer than ``age_ms`` (0: all), in bounded calls."""
    total = 0
    while True:
        purged: int = yield part.purge(age_ms, CHUNK)
        (told or _ignore)(purged)
        total += purged
        if purged < CHUNK:
            return total


def _item(queue: str, calls: QueueCalls, row: DeadRow) -> DeadLetterItem:
    payload: Any = None
    context: Any = None
    enqueued_at: float | None = None
    raw = row.record
    if row.record is not None:
        try:
            payload, context, enqueued_ms, _ = decode_record(calls.serializer, row.record)
            enqueued_at, raw = enqueued_ms / 1000.0, None
        except DeserializationError:
            pass
    attempts, redrives = (row.meta or b"0:0").decode().split(":")[:2]  # then its own limit
    return DeadLetterItem(
        queue=queue,
        job_id=row.job_id,
        payload=payload,
        context=context,
        error=ErrorInfo.from_json(row.error),
        failed_at=row.died_ms / 1000.0,
        attempts=int(attempts),
        redrives=int(redrives),
        enqueued_at=enqueued_at,
        record=raw,
        partition=calls.partition,
    )
