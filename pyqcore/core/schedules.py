"""Schedules, without I/O: storing, listing and removing them, and the scheduler that enqueues
their due runs, written once for both drivers.

Where they live: a schedule of queue Q is stored with the queue, under its hash tag (a
partitioned queue's partition 0, ``{Q#0}``), so that one script call can claim a due run and
enqueue it atomically, on a Redis Cluster too: ``<prefix>:{Q}:schedules`` (HASH name -> JSON
definition) and ``<prefix>:{Q}:schedule_due`` (ZSET name -> next due time, ms on the server's
clock). ``<prefix>:schedules`` (HASH name -> queue, no hash tag, like the queue registry) names
every schedule, so names are unique under a prefix and a scheduler knows which queues to read.

Exactly once: any number of schedulers may run. Each reads the due schedules with the server's
time (``schedules.lua``), works out the runs (``Schedule.runs``: croniter, the catch-up
policy) and claims them with ``schedule_claim.lua``, which moves the due time on and enqueues
the runs only if the due time it read is still the schedule's: of several schedulers that read
the same due time, one enqueues, the others change nothing. Each run's id is the schedule's
name and its due time, so a run is one job even if a schedule were claimed twice.

Crash-safe writes: the name index and a queue's keys are in different slots on a Cluster, so
no one call writes both. Declaring writes the index first, then the definition, then the due
time; removing goes the other way (due time, definition, index last); a move removes the old
queue's keys before the index names the new one. Each step is its own round trip (the two
per-queue writes go in order on one connection), so a writer that dies half-way leaves a
prefix of them: an index entry with nothing behind it (listing skips it, ``unschedule``
removes it), a definition with no due time (never claimed: declaring it again gives it one),
or a new definition with the old due time (claimed once at the old time, then on the new
definition's). A scheduler claims only the schedules that the index names for their queue,
so per-queue keys the index does not name (left by an older writer) enqueue nothing. What
such a crash costs is at worst a schedule missing until the application declares it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyqcore.core.calls import QueueCalls, Stored, text
from pyqcore.core.effects import Command, Flag, Flow, Pause
from pyqcore.core.registry import Registry
from pyqcore.errors import PyqcoreError
from pyqcore.keys import schedules_key, validate_name
from pyqcore.schedule import Schedule

log = logging.getLogger("pyqcore")

READ_LIMIT = 100  # schedules of one queue read per pass (the soonest due)
IDLE_WAIT = 1.0  # longest sleep of a scheduler: it notices new schedules that soon


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass of a scheduler did: runs enqueued, and seconds until the next due time
    it saw (None if it saw none)."""

    enqueued: int
    wait: float | None


class ScheduleFlows:
    """The schedule flows of one prefix (the registry gives each queue's partitions and, for a
    registered queue, its serializer): ``ManagerCore``'s, and a worker's scheduler's."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.index = schedules_key(registry.prefix)

    def _home(self, queue: str) -> Flow[QueueCalls]:
        """The partition a queue's schedules live in (and their runs go to): its first."""
        parts = yield from self.registry.parts_of(queue)
        home: QueueCalls = parts[0]
        return home

    def schedule(
        self, name: str, queue: str, payload: Any = None, *, cron: str | None = None,
        every: float | None = None, tz: str = "UTC", context: Any = None, catch_up: int = 1,
        max_retries: int | None = None, timeout: float | None = None,
    ) -> Flow[Schedule]:
        """Add ``payload`` to ``queue`` at every due time of ``cron`` (a cron expression, read
        in time zone ``tz``) or ``every`` seconds (from the epoch); returns the schedule with
        its next due time. Declaring a schedule that exists with the same definition keeps its
        due time (an application can declare its schedules at every start); a changed one
        starts again from now. ``catch_up``: how many runs missed while no scheduler ran are
        still enqueued (the latest ones). Bad values raise ConfigurationError before any write."""
        wanted = Schedule(name, queue, payload, context, cron, every, tz, catch_up,
                          max_retries, timeout)
        home = yield from self._home(queue)
        old_queue = yield Command(("HGET", self.index, name), lambda raw: raw and text(raw))
        now, [stored] = yield home.read_schedules([name])
        if old_queue and old_queue != queue:
            yield from self._remove_keys(name, old_queue)  # the index still names it: stale
        definition = wanted.to_json()
        if stored.definition is not None and text(stored.definition) == definition \
                and stored.due_ms >= 0:
            due = stored.due_ms
        else:
            due = wanted.due_after(now)
        if old_queue != queue:  # the index first (see the module docstring)
            yield Command(("HSET", self.index, name, queue))
        yield [Command(("HSET", home.keys.key("schedules"), name, definition)),
               Command(("ZADD", home.keys.key("schedule_due"), due, name))]
        return Schedule.from_json(name, queue, definition, due)

    def unschedule(self, name: str) -> Flow[bool]:
        """Remove the schedule ``name``; False if there is none. (A run already enqueued
        stays.)"""
        validate_name("schedule name", name)
        queue = yield Command(("HGET", self.index, name), lambda raw: raw and text(raw))
        if not queue:
            return False
        yield from self._remove(name, queue)
        return True

    def _remove(self, name: str, queue: str) -> Flow[None]:
        yield from self._remove_keys(name, queue)
        yield Command(("HDEL", self.index, name))  # last (see the module docstring)

    def _remove_keys(self, name: str, queue: str) -> Flow[None]:
        """Remove a schedule's keys in its queue: the due time (no claim from now on), then
        the definition."""
        home = yield from self._home(queue)
        yield [Command(("ZREM", home.keys.key("schedule_due"), name)),
               Command(("HDEL", home.keys.key("schedules"), name))]

    def schedules(self) -> Flow[list[Schedule]]:
        """Every schedule under the prefix, by name, with its next due time."""
        by_queue = yield from self._index()
        found: list[Schedule] = []
        for queue, names in sorted(by_queue.items()):
            home = yield from self._home(queue)
            _, stored = yield home.read_schedules(names)
            found += [Schedule.from_json(s.name, queue, s.definition,
                                         s.due_ms if s.due_ms >= 0 else None)
                      for s in stored if s.definition is not None]
        return sorted(found, key=lambda s: s.name)

    def _index(self, queues: Iterable[str] | None = None) -> Flow[dict[str, list[str]]]:
        """Schedule names by queue (only ``queues``, if given)."""
        index = yield Command(("HGETALL", self.index),
                              lambda raw: {text(k): text(v) for k, v in raw.items()})
        wanted = None if queues is None else set(queues)
        by_queue: dict[str, list[str]] = {}
        for name, queue in sorted(index.items()):
            if wanted is None or queue in wanted:
                by_queue.setdefault(queue, []).append(name)
        return by_queue

    # -- the scheduler ----------------------------------------------------------------------

    def claim_due_schedules(self, queues: Iterable[str] | None = None) -> Flow[Pass]:
        """One pass of a scheduler over the schedules (of ``queues``, or all): enqueue the runs
        that are due by the server's clock, once each across every scheduler."""
        by_queue = yield from self._index(queues)
        enqueued, soonest = 0, None
        for queue in sorted(by_queue):
            home = yield from self._home(queue)
            now, stored = yield home.read_schedules([], READ_LIMIT)
            named = set(by_queue[queue])
            for entry in stored:
                if entry.definition is None or entry.name not in named:
                    continue  # being removed, or a writer's crash half-way
                if entry.due_ms > now:
                    wait = (entry.due_ms - now) / 1000
                    soonest = wait if soonest is None else min(soonest, wait)
                    break  # the soonest first: the rest are later
                enqueued += yield from self._claim(home, queue, entry, now)
        return Pass(enqueued, soonest)

    def _claim(self, home: QueueCalls, queue: str, entry: Stored, now: int) -> Flow[int]:
        """Claim the due runs of one schedule; how many jobs it enqueued (0: another
        scheduler had them, or its payload cannot be encoded for this queue)."""
        try:
            schedule = Schedule.from_json(entry.name, queue, entry.definition or b"", None)
            runs, next_ms = schedule.runs(entry.due_ms, now)
            call = home.claim_schedule(schedule, entry.due_ms, next_ms, runs)
        except PyqcoreError as exc:
            log.error("schedule %s: cannot enqueue its runs for queue %s: %s", entry.name,
                      queue, exc)
            return 0
        enqueued: int = yield call
        if enqueued:
            log.info("schedule %s: %d run(s) added to queue %s", entry.name, enqueued, queue)
        return enqueued

    def scheduler_loop(self, stop: Flag, queues: Iterable[str] | None = None,
                       idle_wait: float = IDLE_WAIT) -> Flow[None]:
        """A scheduler: until ``stop`` (a threading.Event, or an asyncio.Event on the asyncio
        API) is set, enqueue the due runs of every schedule (or of ``queues``' schedules),
        sleeping until the next due time (at most ``idle_wait`` seconds, to notice new
        schedules). Any number may run at once: each due run is enqueued once. A failing pass
        is logged and tried again."""
        wanted = None if queues is None else sorted(queues)
        while not stop.is_set():
            try:
                done = yield from self.claim_due_schedules(wanted)
                wait = idle_wait if done.wait is None else min(done.wait, idle_wait)
            except Exception as exc:  # Redis away: the next pass tries again
                log.warning("scheduler: a pass failed (%s)", exc)
                wait = idle_wait
            yield Pause(max(wait, 0.001), stop)

