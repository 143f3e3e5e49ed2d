"""The registry's flows that span queues, without I/O: the names of every known queue and their
sizes (after a pass of dead-letter processing, as the seed system's monitor did)."""

from __future__ import annotations

from pyqcore.core.dead_letters import DeadLetters
from pyqcore.core.effects import Flow
from pyqcore.core.presence import WorkerInfo, list_workers
from pyqcore.core.queue import sum_counts
from pyqcore.core.registry import Registry


class ManagerCore:
    """A registry and its dead-letter queue."""

    def __init__(self, registry: Registry, dead_letters: DeadLetters) -> None:
        self.registry = registry
        self.dead_letters = dead_letters

    def known_queue_names(self) -> Flow[list[str]]:
        """Registered queues plus every queue any process announced under this prefix."""
        return (yield from self.registry.known_queue_names())

    def workers(self) -> Flow[list[WorkerInfo]]:
        """The running workers of this prefix, sync and asyncio, in any process, as their last
        beats described them (a worker gone for three beats is not listed)."""
        now_ms = int(self.registry.clock() * 1000)
        return (yield from list_workers(self.registry.prefix, now_ms))

    def monitor_queue_sizes(
        self, *, process_dead_letters: bool = True, max_age: float = 4 * 3600
    ) -> Flow[dict[str, dict[str, int]]]:
        """Counts per state of every known queue; also runs dead-letter processing (purge
        items older than ``max_age`` seconds, redrive younger ones), as the seed system did."""
        if process_dead_letters:
            yield from self.dead_letters.process_dead_letter_queue(max_age=max_age)
        names = yield from self.registry.known_queue_names()
        parts = {}
        for name in names:
            parts[name] = yield from self.registry.parts_of(name)
        calls = [part.counts() for name in names for part in parts[name]]
        replies = iter((yield calls) if calls else [])
        return {name: sum_counts(next(replies) for _ in parts[name]) for name in names}
