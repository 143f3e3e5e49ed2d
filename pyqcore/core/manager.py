"""The registry's flows that span queues, without I/O: the names of every known queue and their
sizes (after a pass of dead-letter processing, as the seed system's monitor did)."""

from __future__ import annotations

from dataclasses import dataclass

from pyqcore.core.calls import QueueCalls
from pyqcore.core.clock import server_now_ms, time_command
from pyqcore.core.dead_letters import DeadLetters
from pyqcore.core.effects import Command, Flow
from pyqcore.core.presence import WorkerInfo, list_workers
from pyqcore.core.queue import int_map, sum_counts
from pyqcore.core.registry import Registry
from pyqcore.core.schedules import ScheduleFlows
from pyqcore.errors import DeserializationError
from pyqcore.job import decode_record


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One queue at one moment, summed over its partitions: how many partitions, jobs per
    state, its counters, and how long the oldest ready job has waited (None when nothing is
    ready)."""

    partitions: int
    counts: dict[str, int]
    stats: dict[str, int]
    oldest_ready_age: float | None  # seconds


class ManagerCore(ScheduleFlows):
    """A registry, its dead-letter queue and its schedules."""

    def __init__(self, registry: Registry, dead_letters: DeadLetters) -> None:
        super().__init__(registry)
        self.dead_letters = dead_letters

    def known_queue_names(self) -> Flow[list[str]]:
        """Registered queues plus every queue any process announced under this prefix."""
        return (yield from self.registry.known_queue_names())

    def workers(self) -> Flow[list[WorkerInfo]]:
        """The running workers of this prefix, sync and asyncio, in any process, as their last
        beats described them (a worker gone for three beats is not listed)."""
        return (yield from list_workers(self.registry.prefix, self.registry.clock))

    def server_time(self) -> Flow[float]:
        """The queues' clock now, in seconds since the epoch: the Redis server's ``TIME`` (one
        round trip), what the ages shown to users are measured against (a worker's uptime,
        its last beat), so a client's clock plays no part."""
        return (yield from server_now_ms(self.registry.clock)) / 1000

    def snapshot(self) -> Flow[dict[str, QueueSnapshot]]:
        """Every known queue's counts, counters and oldest ready job's age (by the server's
        clock, read in the first round trip), in two round trips (for metrics and dashboards;
        read-only)."""
        names = yield from self.registry.known_queue_names()
        parts = {}
        for name in names:
            parts[name] = yield from self.registry.parts_of(name)
        every = [part for name in names for part in parts[name]]
        if not every:
            return {}
        clock = self.registry.clock
        first = yield [*(p.counts() for p in every),
                       *(Command(("HGETALL", p.keys.key("stats")), int_map) for p in every),
                       *(Command(("LINDEX", p.keys.key("ready"), 0)) for p in every),
                       *([time_command()] if clock is None else [])]
        k = len(every)
        counts, stats, heads = first[:k], first[k: 2 * k], first[2 * k: 3 * k]
        now_ms = first[3 * k] if clock is None else clock.now_ms()
        waiting = [(i, head) for i, head in enumerate(heads) if head is not None]
        records = (yield [Command(("HGET", every[i].keys.key("jobs"), head))
                          for i, head in waiting]) if waiting else []
        enqueued = {i: ms for (i, _), record in zip(waiting, records, strict=True)
                    if (ms := _enqueued_ms(every[i], record)) is not None}
        result, at = {}, 0
        for name in names:
            n = len(parts[name])
            heads_ms = [enqueued[i] for i in range(at, at + n) if i in enqueued]
            result[name] = QueueSnapshot(
                n, sum_counts(counts[at: at + n]), sum_counts(stats[at: at + n]),
                (now_ms - min(heads_ms)) / 1000 if heads_ms else None)
            at += n
        return result

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



def _enqueued_ms(part: QueueCalls, record: bytes | None) -> int | None:
    """When a ready job was added, from its record (None if it is gone or undecodable)."""
    if record is None:
        return None
    try:
        return decode_record(part.serializer, record)[2]
    except DeserializationError:
        return None
