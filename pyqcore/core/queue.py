"""The flows of one queue, written once for both drivers: adding over partitions, reserving
(walking the partitions, burying undecodable records), the worker's ack-and-reserve round
trip, settling leases, failing, counting, item locks, and announcing the queue to the registry.

Each method returns a flow (``pyqcore.core.effects``) or, for a single script call, a bare
``Call``; ``pyqcore.api.queue`` exposes them as the methods of ``BaseQueue``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from redis.exceptions import OutOfMemoryError

from pyqcore.checks import MAX_LOCK_TTL, check_seconds
from pyqcore.codes import Outcome, Throttle
from pyqcore.core.calls import (
    CANCEL_BATCH,
    Call,
    JobRow,
    NewJob,
    QueueCalls,
    Reservation,
    Settled,
    Shared,
    given_id,
    lock_call,
    shared_of,
    text,
    timeout_ms,
    unlock_call,
)
from pyqcore.core.clock import time_command
from pyqcore.core.coalesce import Coalescer, Flag
from pyqcore.core.effects import Command, Flow, Pause, Waiter
from pyqcore.core.events import EventReader, wait_for_result
from pyqcore.core.partitions import Partitions, merge_settled
from pyqcore.core.room import check_room
from pyqcore.errors import (
    ConfigurationError,
    DeserializationError,
    LockNotAcquiredError,
    QueueFullError,
)
from pyqcore.health import warn_if_evicting
from pyqcore.job import ErrorInfo, Job, JobInfo, decode_record
from pyqcore.keys import QueueKeys, event_queues_key, partitions_key, registry_key
from pyqcore.limits import GroupCounts, Rank, check_rank, group_counts
from pyqcore.settings import QueueSettings

if TYPE_CHECKING:
    from pyqcore.tracing import Tracing

log = logging.getLogger("pyqcore")

# A NewJob's partition and Shared: only jobs of one partition, due alike with one limit, share
# an enqueue call.
partition_and_shared = itemgetter(0, 1)
ADDS_IN_FLIGHT = 2  # enqueue calls of a queue object in flight before adds wait and share one


class QueueCore:
    """The flows of one queue (over all its partitions), for one kind of client: on a cluster
    an idle worker blocks on one partition's wake list at a time."""

    def __init__(self, settings: QueueSettings, *, cluster: bool,
                 new_waiter: Callable[[], Waiter] = Flag) -> None:
        self.settings = settings
        self.name = settings.name
        self.cluster = cluster
        self.partitions = Partitions(settings)
        # Concurrent adds share calls (see pyqcore.core.coalesce): at most ADDS_IN_FLIGHT
        # calls in flight for the whole queue object, each for one partition, whatever their
        # number (a pool of 100 connections holds a queue of 1,024 partitions). A driver gives
        # its waiting primitive, flows driven by hand (tests) a Flag.
        self._adds: Coalescer[NewJob, str] = Coalescer(
            self._enqueue, new_waiter, limit=settings.batch_size, key=partition_and_shared,
            in_flight=ADDS_IN_FLIGHT)
        parts = self.partitions.parts  # a lone add's call, built a call sooner on one partition
        self._alone = parts[0].enqueue_one if len(parts) == 1 else self._alone_routed
        self.keys = QueueKeys(settings.prefix, settings.name)  # the logical queue's own keys
        self.announced = False
        self.check_eviction = False  # with the announcement (set for a client's first queue)
        self.tracing = tracing_of(settings)  # None unless tracing=True

    # -- the registry --------------------------------------------------------------------------

    def announce(self) -> Flow[None]:
        """Record the queue under its prefix (its name, and a partitioned queue's partition
        count) so the DLQ, the CLI and other processes find it; refuse a partition count that
        differs from the recorded one (jobs would be stranded in partitions some processes
        never read); warn if Redis may evict keys; learn how far the server's clock is from
        this process's (it dates the records this queue writes); with ``events=True``, record
        that (and the stream's bound) under the queue's name. Runs before the queue's first
        other call, once per queue object."""
        s = self.settings
        if self.check_eviction:
            self.check_eviction = False
            yield from warn_if_evicting(self.cluster)
        commands = [Command(("SADD", registry_key(s.prefix), s.name))]
        if s.events:  # for those that know the queue by name only: the DLQ, the CLI
            commands.append(Command(("HSET", event_queues_key(s.prefix), s.name,
                                     s.events_maxlen)))
        if s.partitions > 1:
            commands.append(Command(("HSETNX", partitions_key(s.prefix), s.name, s.partitions)))
        commands.append(Command(("HGET", partitions_key(s.prefix), s.name),
                                lambda raw: int(raw or 1)))
        try:
            if s.clock is not None:  # a test's clock: no server time to learn
                recorded = (yield commands)[-1]
            else:
                sent = time.time()
                *_, recorded, server_ms = yield [*commands, time_command()]
                s.offset.learn(server_ms, sent, time.time())
            self.announced = True
        except OutOfMemoryError:  # a full Redis refuses writes; workers must still drain it
            reads = [Command(("SMEMBERS", registry_key(s.prefix)),
                             lambda names: s.name.encode() in names),
                     Command(("HGET", partitions_key(s.prefix), s.name),
                             lambda raw: int(raw or s.partitions))]
            sent = time.time()
            # if not recorded yet, the next call tries again
            self.announced, recorded, *server = yield reads + (
                [time_command()] if s.clock is None else [])
            if server:
                s.offset.learn(server[0], sent, time.time())
        if recorded != s.partitions:
            self.announced = False
            raise ConfigurationError(
                f"queue {s.name!r} is recorded with partitions={recorded} under prefix "
                f"{s.prefix!r}, not {s.partitions}; changing it needs a drain first")

    def _announced(self) -> Flow[None]:
        if not self.announced:
            yield from self.announce()

    # -- producing -----------------------------------------------------------------------------

    def add(
        self, payload: Any, *, context: Any = None, delay: float | None = None,
        at: datetime | None = None, job_id: str | None = None,
        partition_key: str | None = None, max_retries: int | None = None,
        timeout: float | None = None, priority: int = 0, group: str | None = None,
    ) -> Call[str] | Flow[str]:
        """Add one job; returns its id. With ``job_id`` the add is idempotent: if a job with
        that id exists, nothing changes. ``delay`` (seconds from now) or ``at`` (an aware
        datetime), both on the Redis server's clock, schedule it for later. ``max_retries``
        and ``timeout`` (seconds a run may take) override the queue's for this job. On a
        partitioned queue, jobs with the same
        ``partition_key`` share a partition (and FIFO). ``priority`` (-1000..1000, default 0):
        higher is leased first, FIFO within a priority. ``group``: the job takes turns with
        the other groups' (and partitions by the group unless ``partition_key`` is given).
        Concurrent plain adds (tasks, threads) on one queue object share script calls: the
        adds that arrive while one is in flight go together in the next
        (``pyqcore.core.coalesce``); each is checked and encoded first (when the flow starts:
        on asyncio at ``await``), so a bad one fails only its caller."""
        if self.tracing is not None:
            context = self.tracing.inject(context)
        shared = shared_of(delay, at, max_retries)
        if type(priority) is int and priority == 0 and group is None:  # a plain add: cheap check
            job = self.partitions.add_one(payload, context, shared, job_id, partition_key,
                                          timeout=0 if timeout is None else timeout_ms(timeout))
            # Once announced, a lone add is a bare call (no flow to drive: its cheapest path).
            return self._adds.submit(job, self._alone if self.announced else None)
        rank = check_rank(priority, group)
        key = partition_key if partition_key is not None else rank.group
        job = self.partitions.add_one(payload, context, shared, job_id, key,
                                      timeout=timeout_ms(timeout))
        return self._add_ranked(self.partitions.parts[job[0]], job, rank)

    def _alone_routed(self, job: NewJob) -> Call[str]:
        """A lone plain add's call: its job alone, to its partition."""
        return self.partitions.parts[job[0]].enqueue_one(job)

    def _add_ranked(self, part: QueueCalls, job: NewJob, rank: Rank) -> Flow[str]:
        """One ranked job's enqueue call (after announcing the queue, the first time: the
        record is dated again by the server clock's offset it learns)."""
        if not self.announced:
            yield from self.announce()
            [job] = part.redated([job])
        ids: list[str] = yield part.enqueue_jobs([job], rank)
        return ids[0]

    def _enqueue(self, jobs: list[NewJob]) -> Call[list[str]] | Flow[list[str]]:
        """One enqueue call of jobs of one partition (after announcing the queue, the first
        time)."""
        part = self.partitions.parts[jobs[0][0]]
        return part.enqueue_jobs(jobs) if self.announced else self._after_announce(part, jobs)

    def _after_announce(self, part: QueueCalls, jobs: list[NewJob]) -> Flow[list[str]]:
        """The queue's first enqueue: announced first, which learns the server clock's
        offset; the jobs' records, encoded before it was known, are dated again by it."""
        yield from self.announce()
        ids: list[str] = yield part.enqueue_jobs(part.redated(jobs))
        return ids

    def add_batch(
        self, payloads: Iterable[Any], *, context: Any = None, delay: float | None = None,
        at: datetime | None = None, job_ids: Sequence[str | None] | None = None,
        partition_keys: Sequence[str | None] | None = None, max_retries: int | None = None,
        timeout: float | None = None, priority: int = 0, group: str | None = None,
    ) -> Flow[list[str]]:
        """Add many jobs with one script call per ``batch_size`` jobs (and partition), all
        sent in one round trip; returns their ids in order. Every payload is encoded before
        anything is written, so one unserializable payload writes nothing. ``delay``, ``at``,
        ``max_retries``, ``timeout``, ``priority`` and ``group`` apply to every job, as in
        ``add``. A batch of several calls first checks that the queue has room for all of it
        (``max_ready``, Redis's ``maxmemory``): QueueFullError, with nothing added, if not (see
        ``pyqcore.core.room``)."""
        rank = check_rank(priority, group)
        if self.tracing is not None:  # now: the caller's context, wherever the flow runs
            context = self.tracing.inject(context)
        shared = shared_of(delay, at, max_retries)
        return self._add_batch(payloads, context, shared, job_ids, partition_keys,
                               timeout=timeout_ms(timeout), rank=rank)

    def _add_batch(
        self, payloads: Iterable[Any], context: Any, shared: Shared,
        job_ids: Sequence[str | None] | None, partition_keys: Sequence[str | None] | None, *,
        timeout: int, rank: Rank,
    ) -> Flow[list[str]]:
        payloads, ids, keys = batch_arguments(payloads, job_ids, partition_keys)
        contexts = [context] * len(payloads)
        calls, positions, owners = self.partitions.add(payloads, contexts, shared, ids, keys,
                                                       timeout=timeout, rank=rank)
        if not self.announced:  # encoded again once announced, dated with the server offset
            yield from self.announce()
            calls, positions, owners = self.partitions.add(payloads, contexts, shared, ids,
                                                           keys, timeout=timeout, rank=rank)
        if len(calls) > 1:
            yield from check_room(self.name, self.partitions.parts, calls, positions, owners,
                                  max_ready=self.settings.max_ready)
        replies = (yield calls) if calls else []
        return in_caller_order(replies, positions, len(payloads))

    # -- consuming -----------------------------------------------------------------------------

    def reserve(self, count: int = 1, *, visibility_timeout: float | None = None
                ) -> Flow[list[Job]]:
        """Lease up to ``count`` ready jobs. Records that cannot be decoded go straight to the
        dead-letter queue with the reason and are not returned."""
        first, *others = self.partitions.reading_order()
        lease = first.lease(count, visibility_timeout)  # bad arguments raise before any I/O
        yield from self._announced()
        reservation = yield lease
        return (yield from self._next_partitions(reservation, others, count,
                                                 visibility_timeout)).jobs

    def ack_and_reserve(
        self, done: list[Job], count: int
    ) -> Flow[tuple[Settled | None, Reservation | None]]:
        """Ack ``done`` and lease up to ``count`` more jobs in one round trip (the worker's
        hot path); returns the ack's reply unless done is empty, and the reservation unless
        count is 0."""
        yield from self._announced()
        acks = [part.finish(group) for part, group in self.partitions.grouped(done)]
        first, *others = self.partitions.reading_order()
        calls: list[Call[Any]] = [*acks, first.lease(count)] if count else acks
        results = (yield calls) if calls else []
        settled = merge_settled(results[: len(acks)]) if done else None
        if not count:
            return settled, None
        return settled, (yield from self._next_partitions(results[-1], others, count))

    def _next_partitions(
        self, reservation: Reservation, others: list[QueueCalls], count: int,
        visibility_timeout: float | None = None,
    ) -> Flow[Reservation]:
        """While a partition had nothing, try it again if more is ready there now (it took only
        orphans, or more was due than one call handles), then the next ones (a round trip
        each): a worker never sleeps, nor a burst worker stops, while some partition has ready
        jobs. Then bury what was undecodable. With no job, the reply's wait is the soonest of
        the partitions', and its throttle what held them back (``merged_throttle``)."""
        soonest: int | None = None
        throttles: list[Throttle] = []
        parts = iter(others)
        while True:
            while reservation.more_ready:
                reservation = yield self.partitions.parts[reservation.partition].lease(
                    count, visibility_timeout)
            if reservation.jobs or reservation.undecodable:
                break
            throttles.append(reservation.throttle)
            if (wait := reservation.wait_ms) is not None:  # 0 is a wait too (due now)
                soonest = wait if soonest is None else min(soonest, wait)
            if (part := next(parts, None)) is None:
                break
            reservation = yield part.lease(count, visibility_timeout)
        part = self.partitions.parts[reservation.partition]
        for job_id, token, exc in reservation.undecodable:
            log.error("queue %s: job %s has a corrupt record, moved to the DLQ: %s",
                      self.name, job_id, exc)
            yield part.bury(job_id, token, ErrorInfo.from_exception(exc))
        throttle = merged_throttle(throttles) if throttles else reservation.throttle
        return replace(reservation, wait_ms=soonest, throttle=throttle)

    def wake_keys(self) -> list[str]:
        """What an idle worker blocks on: every partition's wake list, or on a cluster (where
        one BLPOP cannot span slots) one partition's, in turn."""
        parts = self.partitions.reading_order()
        return [p.keys.key("wake") for p in (parts[:1] if self.cluster else parts)]

    def ack(self, jobs: Job | Iterable[Job]) -> Flow[int]:
        """Finish jobs; returns how many were acked (a job whose lease was lost counts 0)."""
        return (yield from self._settle(jobs, lambda part, group: part.finish(group))).count

    def fail(self, job: Job, error: BaseException | ErrorInfo, *, retry: bool = True
             ) -> Flow[Outcome]:
        """Record a failed delivery: retry after the backoff while attempts remain (the job's
        own ``max_retries``, else the queue's), ``retry`` is true and the queue's retry rules
        allow the error (not a ``NonRetryableError``, nor one of ``dead_on``; one of
        ``retry_on`` if set), else move the job to the dead-letter queue. Raises
        LeaseLostError if the lease is stale."""
        if not isinstance(error, BaseException | ErrorInfo):
            raise ConfigurationError(f"fail needs the exception (or an ErrorInfo) the job "
                                     f"failed with, got {error!r:.80}")
        [job] = as_job_list(job)
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        retry = retry and (isinstance(error, ErrorInfo) or self.settings.retries(error))
        failed = yield self.partitions.of(job).failure(job, info, retry)
        outcome: Outcome = failed.outcome
        return outcome

    def extend(self, jobs: Job | Iterable[Job], seconds: float | None = None) -> Flow[int]:
        """Heartbeat: lease held jobs for ``seconds`` more from now (default: the visibility
        timeout). Updates their ``lease_deadline``; returns how many were still held."""
        held = as_job_list(jobs)
        reply = yield from self._settle(held, lambda part, group: part.heartbeat(group, seconds))
        return renewed(held, reply)

    def release(self, jobs: Job | Iterable[Job]) -> Flow[int]:
        """Give back leased jobs unstarted: front of ready, the delivery not counted."""
        return (yield from self._settle(jobs,
                                        lambda part, group: part.release(pairs(group)))).count

    def _settle(
        self, jobs: Job | Iterable[Job], call: Callable[[QueueCalls, list[Job]], Call[Settled]]
    ) -> Flow[Settled]:
        """One call per partition holding some of ``jobs``, in one round trip, replies merged."""
        calls = [call(part, group) for part, group in self.partitions.grouped(as_job_list(jobs))]
        if not calls:
            return Settled(0, [])
        replies: list[Settled] = yield calls
        return replace(merge_settled(replies), deadline_ms=replies[0].deadline_ms,
                       cancelled=tuple(i for reply in replies for i in reply.cancelled))

    # -- pausing -------------------------------------------------------------------------------

    def pause(self) -> Flow[bool]:
        """Pause the queue: no worker leases a job of it until ``resume`` (jobs already leased
        run on and settle; adds go on). Kept in Redis, so it holds across worker restarts;
        returns False if it was paused already."""
        yield from self._announced()
        return (yield from set_paused(self.partitions.parts, True))

    def resume(self) -> Flow[bool]:
        """Resume a paused queue (its waiting workers are woken); returns False if it was not
        paused."""
        yield from self._announced()
        return (yield from set_paused(self.partitions.parts, False))

    def is_paused(self) -> Flow[bool]:
        """Whether the queue is paused."""
        found = yield [Command(("EXISTS", p.keys.key("paused"))) for p in self.partitions.parts]
        return any(found)

    def pause_group(self, group: str) -> Flow[bool]:
        """Pause one group: its jobs wait (and adds to it go on) while the other groups' jobs
        are leased; returns False if it was paused already."""
        yield from self._announced()
        return (yield from set_paused(self.partitions.parts, True, group))

    def resume_group(self, group: str) -> Flow[bool]:
        """Resume a paused group; returns False if it was not paused."""
        yield from self._announced()
        return (yield from set_paused(self.partitions.parts, False, group))

    # -- inspecting ----------------------------------------------------------------------------

    def group_counts(self) -> Flow[dict[str, GroupCounts]]:
        """Per group with jobs ready or leased, or paused: its ready jobs, its leases and
        whether it is paused (summed over partitions)."""
        return (yield from read_group_counts(self.partitions.parts))

    def counts(self) -> Flow[dict[str, int]]:
        """Jobs per state: ready, delayed, leased, dead (one consistent read per partition)."""
        return sum_counts((yield [p.counts() for p in self.partitions.parts]))

    def stats(self) -> Flow[dict[str, int]]:
        """The queue's counters (summed over partitions): added, completed, retried, dead,
        redriven, purged, ..."""
        commands = [Command(("HGETALL", p.keys.key("stats")), int_map)
                    for p in self.partitions.parts]
        return sum_counts((yield commands))

    def get_job(self, job_id: str) -> Flow[JobInfo | None]:
        """What is known of job ``job_id``: its state (waiting, delayed, active, dead, and on
        a queue that keeps finished jobs completed or cancelled), payload, attempts, times and
        last error; None once it is gone (acked, purged, trimmed, or cancelled on a queue that
        keeps nothing) or if it never existed. One read per partition, in one round trip (an id
        added with a ``partition_key`` can live in any partition)."""
        job_id = given_id(job_id)
        parts = self.partitions.parts
        found: list[JobRow | None] = yield [part.job_info(job_id) for part in parts]
        for part, row in zip(parts, found, strict=True):
            if row is not None:
                return job_info(self.name, part, job_id, row)
        return None

    def result(self, job_id: str, timeout: float | None = None) -> Flow[Any]:
        """Wait for job ``job_id`` to finish and return what its handler returned (needs
        ``store_results=True``): at once if it has finished, else without polling (a
        blocking read of its partition's events stream) for at most ``timeout`` seconds (None:
        no limit). Raises JobDeadError (with its last error) if it died, JobCancelledError if
        it was cancelled, JobNotFoundError for an id no job has (never added, or gone), and
        ResultTimeoutError (also a TimeoutError) past the timeout."""
        if not self.settings.store_results:
            raise ConfigurationError(f"queue {self.name!r}: result() waits for a kept result: "
                                     "make the queue with store_results=True (and "
                                     "keep_completed or keep_completed_count)")
        return (yield from wait_for_result(self.partitions.parts, job_id, timeout))

    def event_reader(self, since: object = None, block: object = True) -> EventReader:
        """The reader behind ``queue.events(since, block)`` (each API iterates over its
        ``read`` flows); ConfigurationError unless the queue writes events."""
        if not self.settings.events_level:
            raise ConfigurationError(f"queue {self.name!r} writes no events: make it with "
                                     "events=True (store_results alone writes completed, "
                                     "dead and cancelled)")
        return EventReader(self.partitions.parts, self.cluster, since, block)

    def cancel(self, job_id: str) -> Flow[bool]:
        """Cancel one job; True if it was waiting or delayed and is now deleted, so no
        handler will ever start it. An active job is only marked (False): its handler sees
        ``job.cancelled`` after the next heartbeat, its lease is not renewed, and a failure
        or an expired lease deletes it rather than retrying it. Dead or unknown: False."""
        return (yield from self.cancel_many([job_id]))[0]

    def cancel_many(self, job_ids: Iterable[str]) -> Flow[list[bool]]:
        """``cancel`` of many jobs, in calls of ``CANCEL_BATCH`` ids per partition sent in
        one round trip; one bool per id, in order."""
        ids = [given_id(i) for i in job_ids]  # all checked before any write
        parts = self.partitions.parts
        chunks = [ids[i : i + CANCEL_BATCH] for i in range(0, len(ids), CANCEL_BATCH)]
        calls = [part.cancel(chunk) for chunk in chunks for part in parts]
        replies: list[list[int]] = (yield calls) if calls else []
        done: list[bool] = []
        for c, chunk in enumerate(chunks):
            per_part = replies[c * len(parts) : (c + 1) * len(parts)]
            done += [any(reply[i] == 1 for reply in per_part) for i in range(len(chunk))]
        return done

    def clear(self) -> Flow[int]:
        """Delete every waiting job (ready and delayed) with its record, in bounded batches
        (each call atomic; jobs added meanwhile may go too); leased and dead jobs stay.
        Returns how many were deleted."""
        return (yield from clear_parts(self.partitions.parts))

    # -- item locks ----------------------------------------------------------------------------

    def acquire_lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> Flow[str]:
        """Take the item lock ``item`` for at most ``ttl`` seconds, waiting up to ``wait``
        seconds for another holder; returns the lock's token (LockNotAcquiredError after
        ``wait``)."""
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"a lock's item must be a non-empty str, got {item!r:.80}")
        ttl_ms = max(1, round(check_seconds("lock ttl", ttl, high=MAX_LOCK_TTL) * 1000))
        key = self.keys.lock(item)
        waiting = LockWait(item, check_seconds("lock wait", wait, high=MAX_LOCK_TTL, zero=True))
        while (remaining := (yield lock_call(key, waiting.token, ttl_ms))) is not None:
            yield Pause(waiting.pause(remaining))
        return waiting.token

    def release_lock(self, item: str, token: str) -> Call[bool]:
        """Release the item lock ``item`` if ``token`` still holds it."""
        return unlock_call(self.keys.lock(item), token)


def set_paused(parts: Sequence[QueueCalls], paused: bool, group: str | None = None
               ) -> Flow[bool]:
    """Pause or resume every partition of a queue (or one group of it, which a partitioned
    queue may hold in several), in one round trip; returns whether any changed."""
    if group is not None:
        check_rank(0, group)
    changed: list[bool] = yield [part.pause(paused, group) for part in parts]
    return any(changed)


def read_group_counts(parts: Sequence[QueueCalls]) -> Flow[dict[str, GroupCounts]]:
    """The groups of a queue's partitions (their ``flow`` hashes), summed by group."""
    per_part: list[dict[str, GroupCounts]] = yield [
        Command(("HGETALL", part.keys.key("flow")), group_counts) for part in parts]
    total: dict[str, GroupCounts] = {}
    for counts in per_part:
        for group, seen in counts.items():
            total[group] = total.get(group, GroupCounts()) + seen
    return total


def merged_throttle(throttles: Sequence[Throttle]) -> Throttle:
    """What held back a reserve over several partitions: RATE only if every partition was
    rate-limited (else a worker could miss another partition's jobs), else the first limit
    met (a worker waits for it rather than stopping), else the last answer."""
    if all(t is Throttle.RATE for t in throttles):
        return Throttle.RATE
    limits = [t for t in throttles if t in (Throttle.FULL, Throttle.GROUPS)]
    return limits[0] if limits else throttles[-1]


def int_map(raw: dict[Any, Any]) -> dict[str, int]:
    """An HGETALL reply of counters as {name: int}."""
    return {text(k): int(v) for k, v in raw.items()}


def renewed(held: list[Job], reply: Settled) -> int:
    """Move the ``lease_deadline`` of the jobs an extend renewed, and mark those it found
    cancelled (not renewed); returns how many it renewed."""
    lost, cancelled = set(reply.refused), set(reply.cancelled)
    for job in held:
        if job.id in cancelled:
            job.cancelled = True
        elif job.id not in lost:
            job.lease_deadline = reply.deadline_ms / 1000.0
    return reply.count


def clear_parts(parts: Iterable[QueueCalls]) -> Flow[int]:
    """Delete every waiting job of these partitions, a bounded batch per call, until none is
    left (``QueueCore.clear``; the CLI's ``pyqcore clear``); returns how many went."""
    total = 0
    for part in parts:
        deleted = remaining = 1
        while remaining and deleted:  # a call that deleted nothing ends it: never a spin
            deleted, remaining = yield part.clear()
            total += deleted
    return total


def job_info(queue: str, part: QueueCalls, job_id: str, row: JobRow) -> JobInfo:
    """A ``JobInfo`` from one partition's ``job_info`` reply."""
    payload: Any = None
    context: Any = None
    added_at: float | None = None
    raw: bytes | None = row.record
    try:
        payload, context, enqueued_ms, _ = decode_record(part.serializer, row.record)
        added_at, raw = enqueued_ms / 1000.0, None
    except DeserializationError:
        pass
    history = text(row.meta) if row.meta is not None else "0:0"
    attempts, redrives = (int(n) for n in history.split(":")[:2])
    at = row.at_ms / 1000.0
    active = row.state == "active"
    return JobInfo(
        id=job_id, queue=queue, state=row.state,  # type: ignore[arg-type]
        payload=payload, context=context, attempts=attempts + active, redrives=redrives,
        added_at=added_at, due_at=at if row.state == "delayed" else None,
        lease_deadline=at if active else None,
        finished_at=at if row.state in ("dead", "completed", "cancelled") else None,
        error=ErrorInfo.from_json(row.error), cancel_requested=history.endswith(":c"),
        result=None if row.result is None else part.serializer.loads(row.result),
        record=raw, partition=part.partition)


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


def in_caller_order(replies: Iterable[list[str] | QueueFullError],
                    positions: Iterable[list[int]], count: int) -> list[str]:
    """The ids of each enqueue call put back at their jobs' positions in the caller's batch;
    QueueFullError if a call was refused, with the ids of the jobs the other calls added."""
    result: list[str | None] = [None] * count
    refused: list[QueueFullError] = []
    for reply, where in zip(replies, positions, strict=True):
        if isinstance(reply, QueueFullError):
            refused.append(reply)
            continue
        for job_id, i in zip(reply, where, strict=True):
            result[i] = job_id
    if refused:
        added = count - result.count(None)
        raise QueueFullError(str(refused[0]) if not added else (
            f"only {added} of the batch's {count} jobs were added (QueueFullError.ids has "
            f"their ids): the queue filled up after the room check, and a call was refused: "
            f"{refused[0]}"), result)
    return cast("list[str]", result)  # every position was filled


def as_job_list(jobs: Job | Iterable[Job]) -> list[Job]:
    """One job or many, as a list; ConfigurationError for anything that is not a leased Job
    (an id, say: settling needs the lease token the Job carries)."""
    if isinstance(jobs, Job):
        return [jobs]
    listed = list(jobs) if isinstance(jobs, Iterable) and not isinstance(jobs, str | bytes) \
        else [jobs]
    for job in listed:
        if not isinstance(job, Job):
            raise ConfigurationError(f"expected leased Jobs (from reserve or a handler), got "
                                     f"{job!r:.80}")
    return listed


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


def tracing_of(settings: QueueSettings) -> Tracing | None:
    """A queue's tracing (``pyqcore.tracing``, imported only then), or None when it is off."""
    if not settings.tracing:
        return None
    try:
        from pyqcore.tracing import Tracing  # noqa: PLC0415 - the optional extra pyqcore[otel]
    except ImportError as exc:
        raise ConfigurationError("tracing=True needs the OpenTelemetry extra: pip install "
                                 "'pyqcore[otel]'") from exc
    return Tracing(settings.name, settings.partitions > 1)
