"""What the web dashboard shows and does, through the sync public API (every method blocks on
Redis: the app calls them in Starlette's threadpool). Nothing here knows about HTTP.

A queue known only by name (announced by another process) is read through a
``BaseQueue(client, name=..., prefix=..., partitions=<recorded count>)``, so its counts and
counters are summed over its partitions, on one server or a Redis Cluster alike; the
dead-letter queue is the manager's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pyqcore.core.dead_letters import CHUNK
from pyqcore.core.presence import WorkerInfo
from pyqcore.errors import UnknownQueueError
from pyqcore.job import DeadLetterItem
from pyqcore.rates import Rates
from pyqcore.sync.manager import QueueManager

STATES = ("ready", "delayed", "leased", "dead")
COUNTERS = ("added", "completed", "retried", "dead", "reclaimed", "redriven", "purged",
            "orphaned")
SEARCH_LIMIT = 10_000  # most dead jobs one search by error text examines
PAGE_SIZE = 50  # dead jobs per page


@dataclass(frozen=True)
class QueueRow:
    """One queue: its partition count, jobs per state and counters (summed over partitions)."""

    name: str
    partitions: int
    counts: dict[str, int]
    stats: dict[str, int]


@dataclass(frozen=True)
class DeadPage:
    """One page of the dead-letter queue, oldest first within each queue, queues by name."""

    items: list[DeadLetterItem]
    total: int  # dead jobs selected (matching the search, if any)
    offset: int
    limit: int
    search: str = ""
    examined: int = 0  # with a search: how many dead jobs were read
    truncated: bool = False  # the search stopped after SEARCH_LIMIT dead jobs


class Dashboard:
    """The queues, dead jobs and workers of one ``QueueManager``'s prefix."""

    def __init__(self, manager: QueueManager, *, window: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.manager = manager
        self.prefix = manager.prefix
        self.rates = Rates(window)
        self.clock = clock

    # -- queues ---------------------------------------------------------------------------------

    def known(self) -> list[str]:
        """Every known queue's name: registered here, or announced by any process."""
        return self.manager.known_queue_names()

    def check_queue(self, name: str) -> None:
        """UnknownQueueError unless ``name`` is a known queue."""
        if name not in self.known():
            raise UnknownQueueError(f"unknown queue {name!r} under prefix {self.prefix!r}")

    def queues(self) -> list[QueueRow]:
        """Every known queue with its counts and counters (summed over its partitions), by
        name: ``manager.snapshot()``, two round trips for them all."""
        return [QueueRow(name, view.partitions, view.counts, view.stats)
                for name, view in sorted(self.manager.snapshot().items())]

    def sample(self) -> None:
        """Record every queue's ``completed`` counter now (for the rate chart)."""
        self.rates.add(self.clock(), {name: view.stats.get("completed", 0)
                                      for name, view in self.manager.snapshot().items()})

    def series(self) -> dict[str, list[tuple[float, float]]]:
        """Completed per second of each queue over the window (see ``Rates.series``)."""
        return self.rates.series(self.clock())

    # -- workers --------------------------------------------------------------------------------

    def workers(self) -> tuple[list[WorkerInfo], float]:
        """The running workers (``manager.workers()``) and the server's time they are shown
        at (their ages are measured against it, not this process's clock)."""
        return self.manager.workers(), self.manager.server_time()

    # -- the dead-letter queue ------------------------------------------------------------------

    def dead_count(self, queue: str | None = None) -> int:
        return self.manager.dead_letter_queue.count(queue)

    def dead_page(self, queue: str | None = None, search: str = "", offset: int = 0,
                  limit: int = PAGE_SIZE) -> DeadPage:
        """Dead jobs of ``queue`` (or of every known queue), ``offset`` to ``offset + limit``;
        with ``search``, only those whose error (type and message) contains it, ignoring
        case, among the first ``SEARCH_LIMIT`` dead jobs."""
        dlq = self.manager.dead_letter_queue
        names = [queue] if queue is not None else self.known()
        if search:
            return self._search(names, search, offset, limit)
        items: list[DeadLetterItem] = []
        total, skip = 0, offset
        for name in names:  # DeadLetterQueue.items skips offset per queue: page across them
            dead = dlq.count(name)
            total += dead
            if len(items) >= limit or dead == 0:
                continue
            if skip >= dead:
                skip -= dead
                continue
            items += dlq.items(queue=name, limit=limit - len(items), offset=skip)
            skip = 0
        return DeadPage(items, total, offset, limit)

    def _search(self, names: list[str], search: str, offset: int, limit: int) -> DeadPage:
        dlq = self.manager.dead_letter_queue
        needle = search.casefold()
        matches: list[DeadLetterItem] = []
        examined, truncated = 0, False
        for name in names:
            start = 0
            while True:
                want = min(CHUNK, SEARCH_LIMIT - examined)
                if want == 0:
                    truncated = dlq.count(name) > start
                    break
                page = dlq.items(queue=name, limit=want, offset=start)
                examined += len(page)
                start += len(page)
                matches += [item for item in page if item.error is not None and needle in
                            f"{item.error.type}: {item.error.message}".casefold()]
                if len(page) < want:
                    break
            if truncated:
                break
        return DeadPage(matches[offset : offset + limit], len(matches), offset, limit,
                        search=search, examined=examined, truncated=truncated)

    def dead_item(self, queue: str, job_id: str) -> DeadLetterItem | None:
        """Dead job ``job_id`` of ``queue``, or None if it is not dead."""
        return self.manager.dead_letter_queue.get(queue, job_id)

    def requeue(self, queue: str, ids: list[str] | None) -> int:
        """Send ``ids`` (None: every dead job) of ``queue`` back to ready; how many went."""
        return self.manager.dead_letter_queue.requeue(queue, ids)

    def purge(self, queue: str, ids: list[str] | None) -> int:
        """Delete ``ids`` (None: every dead job) of ``queue`` for good; how many went."""
        if ids is None:
            return self.manager.dead_letter_queue.purge(queue)
        return self.manager.dead_letter_queue.purge(queue, ids=ids)
