"""``DeadLetterQueue``: the jobs that failed for good, across every queue of a prefix.

Each queue keeps its own dead set (``P:{Q}:dead``), so a redrive is one atomic script in the
queue's slot. The DLQ needs nothing but a queue's name: it works for queues this process never
registered (their records are decoded with the default serializer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyqcore.core import DeadRow, QueueCalls
from pyqcore.errors import ConfigurationError, DeserializationError
from pyqcore.job import DeadLetterItem, ErrorInfo, decode_record
from pyqcore.keys import partitions_key
from pyqcore.partitions import Partitions
from pyqcore.settings import QueueSettings

if TYPE_CHECKING:
    from pyqcore.manager import QueueManager

BATCH = 1000  # jobs per purge/redrive script call


@dataclass(frozen=True, slots=True)
class DeadLetterReport:
    """What one ``process_dead_letter_queue`` pass did."""

    purged: int = 0
    redriven: int = 0
    kept_back: int = 0  # young, but already redriven max_redrives times: left dead


class DeadLetterQueue:
    """Purges old dead jobs, redrives young ones to their original queue, lists them."""

    def __init__(self, manager: QueueManager, *, max_redrives: int = 3) -> None:
        if isinstance(max_redrives, bool) or not isinstance(max_redrives, int) or max_redrives < 0:
            raise ConfigurationError(f"max_redrives must be an int >= 0, got {max_redrives!r}")
        self.manager = manager
        self.max_redrives = max_redrives

    def parts_of(self, queue: str) -> list[QueueCalls]:
        """The script calls of each partition of a queue: the registered queue's, or for a
        name only, defaults with the partition count recorded at registration."""
        registered = self.manager.queues.get(queue)
        if registered is not None:
            return registered._parts.parts
        raw = self.manager.client.hget(partitions_key(self.manager.prefix), queue)
        settings = QueueSettings(name=queue, prefix=self.manager.prefix,
                                 clock=self.manager.clock, partitions=int(raw or 1))
        return Partitions(settings).parts

    def _names(self, queue: str | None) -> list[str]:
        return self.manager.known_queue_names() if queue is None else [queue]

    def _now_ms(self) -> int:
        return int(self.manager.clock() * 1000)

    def items(
        self, queue: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[DeadLetterItem]:
        """Dead jobs, oldest first within each queue (skipping ``offset`` per queue): of one
        queue, or of all known queues, up to ``limit``."""
        found: list[DeadLetterItem] = []
        for name in self._names(queue):
            parts = self.parts_of(name)
            calls = [part.peek_dead(0, offset + limit) for part in parts]
            rows = [(_item(name, part, row), row.died_ms)
                    for part, part_rows in zip(parts, self.manager.runner.run_all(calls),
                                               strict=True)
                    for row in part_rows]
            rows.sort(key=lambda pair: pair[1])
            found.extend(item for item, _ in rows[offset : offset + limit - len(found)])
            if len(found) >= limit:
                break
        return found

    def count(self, queue: str | None = None) -> int:
        """How many jobs are dead, in one queue or in all known queues."""
        calls = [part.counts() for name in self._names(queue) for part in self.parts_of(name)]
        return sum(c["dead"] for c in self.manager.runner.run_all(calls)) if calls else 0

    def process_dead_letter_queue(self, max_age: float = 4 * 3600) -> DeadLetterReport:
        """In every known queue: delete dead jobs older than ``max_age`` seconds, and redrive
        younger ones to their queue (unless already redriven ``max_redrives`` times)."""
        cutoff = self._now_ms() - round(max_age * 1000)
        purged = redriven = kept = 0
        for name in self._names(None):
            for part in self.parts_of(name):
                purged += self._purge(part, cutoff)
                moved, kept_back = self._redrive_scan(part, self.max_redrives, cutoff)
                redriven, kept = redriven + moved, kept + kept_back
        return DeadLetterReport(purged, redriven, kept)

    def _redrive_scan(self, part: QueueCalls, limit: int, min_died_ms: int) -> tuple[int, int]:
        """Redrive every dead job of a partition that died at or after ``min_died_ms``, in
        bounded batches; returns (redriven, kept back at their limit)."""
        moved = kept = 0
        while True:
            r = self.manager.runner.run(part.redrive(limit, min_died_ms, kept, BATCH))
            moved, kept = moved + r.redriven, kept + r.kept_back
            if r.examined < BATCH:
                return moved, kept

    def _purge(self, part: QueueCalls, before_ms: int) -> int:
        total = 0
        while (n := self.manager.runner.run(part.purge(before_ms, BATCH))) == BATCH:
            total += n
        return total + n

    def reprocess_item(self, item: DeadLetterItem, *, force: bool = False) -> bool:
        """Send one dead job back to its original queue under its id, attempts reset. Refused
        (False) when it is no longer dead, or was redriven ``max_redrives`` times (unless
        ``force``)."""
        part = self.parts_of(item.queue)[item.partition]
        limit = -1 if force else self.max_redrives
        return self.manager.runner.run(part.redrive(limit, ids=[item.job_id])).redriven == 1

    def requeue(self, queue: str, ids: list[str] | None = None, *, force: bool = True) -> int:
        """Redrive ``ids`` (or every dead job) of ``queue``; an operator's requeue ignores the
        redrive limit unless ``force`` is False. Returns how many went back to ready."""
        limit = -1 if force else self.max_redrives
        moved = 0
        for part in self.parts_of(queue):
            if ids is None:
                moved += self._redrive_scan(part, limit, 0)[0]
                continue
            for i in range(0, len(ids), BATCH):  # an id that is not dead here is skipped
                moved += self.manager.runner.run(
                    part.redrive(limit, ids=ids[i : i + BATCH])).redriven
        return moved

    def purge(self, queue: str | None = None, *, max_age: float = 0.0,
              ids: list[str] | None = None) -> int:
        """Delete dead jobs for good: ``ids`` of ``queue``, or those older than ``max_age``."""
        if ids is not None:
            if queue is None:
                raise ConfigurationError("purging by ids needs the queue they belong to")
            return sum(self.manager.runner.run(part.purge(ids=ids))
                       for part in self.parts_of(queue))
        cutoff = self._now_ms() - round(max_age * 1000) + (1 if max_age == 0 else 0)
        return sum(self._purge(part, cutoff)
                   for name in self._names(queue) for part in self.parts_of(name))


def _item(queue: str, calls: QueueCalls, row: DeadRow) -> DeadLetterItem:
    payload: Any = None
    context: Any = None
    enqueued_at: float | None = None
    raw = row.record
    if row.record is not None:
        try:
            payload, context, enqueued_ms = decode_record(calls.serializer, row.record)
            enqueued_at, raw = enqueued_ms / 1000.0, None
        except DeserializationError:
            pass
    attempts, redrives = (row.meta or b"0:0").decode().split(":")
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
