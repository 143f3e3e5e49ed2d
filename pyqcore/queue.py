"""``BaseQueue``: the synchronous API of one queue. Each method asks the core for a script call,
runs it, and returns the parsed reply; the state machine itself lives in ``lua/``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.cluster import RedisCluster

from pyqcore.codes import Outcome
from pyqcore.core import (
    Call,
    QueueCalls,
    Reservation,
    Settled,
    lock_call,
    text,
    unlock_call,
)
from pyqcore.definition import (
    LockWait,
    QueueDefinition,
    QueueOptions,
    as_job_list,
    batch_arguments,
    in_caller_order,
    pairs,
    renewed,
    sum_counts,
)
from pyqcore.errors import ConfigurationError
from pyqcore.health import warn_if_evicting
from pyqcore.job import ErrorInfo, Job
from pyqcore.partitions import merge_settled
from pyqcore.runner import Client, Runner
from pyqcore.worker import DEFAULT_PREFETCH, Worker, WorkerReport

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("pyqcore")

Handler = Callable[[Job], object]
# Handles a leased batch at once; returns None, or the failed jobs' ids -> what they raised.
BatchHandler = Callable[[list[Job]], Mapping[str, BaseException] | None]


class BaseQueue(QueueDefinition):
    """A named queue. Subclass it (set ``name``, override ``process_job``, or ``process_jobs``
    for whole batches) or pass ``name=`` and ``handler=`` (or ``batch_handler=``). Class
    attributes are the defaults; constructor arguments override them (see QueueOptions)."""

    def __init__(
        self,
        client: Client,
        *,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        **options: Unpack[QueueOptions],
    ) -> None:
        super().__init__(**options)
        if handler is not None and batch_handler is not None:
            raise ConfigurationError("pass handler= or batch_handler=, not both")
        self.client = client
        self._handler = handler
        self._batch_handler = batch_handler
        self._runner = Runner(client)
        self._cluster = isinstance(client, RedisCluster)
        warn_if_evicting(client)

    # -- producing -----------------------------------------------------------------------------

    def add(
        self, payload: Any, *, context: Any = None, delay: float = 0.0,
        job_id: str | None = None, partition_key: str | None = None,
    ) -> str:
        """Add one job; returns its id. With ``job_id`` the add is idempotent: if a job with
        that id exists, nothing changes. ``delay`` (seconds) schedules it for later. On a
        partitioned queue, jobs with the same ``partition_key`` share a partition (and FIFO)."""
        return self._runner.run(self._parts.add_one(payload, context, delay, job_id,
                                                    partition_key))

    def add_batch(
        self,
        payloads: Iterable[Any],
        *,
        context: Any = None,
        delay: float = 0.0,
        job_ids: Sequence[str | None] | None = None,
        partition_keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Add many jobs with one script call per ``batch_size`` jobs (and partition), all
        sent in one round trip; returns their ids in order. Every payload is encoded before
        anything is written, so one unserializable payload writes nothing. Each call of the
        round trip is atomic."""
        payloads, ids, keys = batch_arguments(payloads, job_ids, partition_keys)
        calls, positions = self._parts.add(payloads, [context] * len(payloads), delay, ids, keys)
        return in_caller_order(self._runner.run_all(calls), positions, len(payloads))

    # -- consuming -----------------------------------------------------------------------------

    def reserve(self, count: int = 1, *, visibility_timeout: float | None = None) -> list[Job]:
        """Lease up to ``count`` ready jobs. Records that cannot be decoded go straight to the
        dead-letter queue with the reason and are not returned."""
        return self._reserve(count, visibility_timeout).jobs

    def _reserve(self, count: int, visibility_timeout: float | None = None) -> Reservation:
        first, *others = self._parts.reading_order()
        reservation = self._runner.run(first.lease(count, visibility_timeout))
        return self._next_partitions(reservation, others, count, visibility_timeout)

    def _next_partitions(
        self, reservation: Reservation, others: list[QueueCalls], count: int,
        visibility_timeout: float | None = None,
    ) -> Reservation:
        """While a partition had nothing, try the next ones (a round trip each): a worker
        never sleeps while another partition has ready jobs."""
        soonest = reservation.next_event_ms
        for part in others:
            if reservation.jobs or reservation.undecodable:
                break
            reservation = self._runner.run(part.lease(count, visibility_timeout))
            if reservation.next_event_ms is not None:
                soonest = min(soonest or reservation.next_event_ms, reservation.next_event_ms)
        self._bury_undecodable(reservation)
        return replace(reservation, next_event_ms=soonest)

    def _ack_and_reserve(
        self, done: list[Job], count: int
    ) -> tuple[Settled | None, Reservation | None]:
        """Ack ``done`` and lease up to ``count`` more jobs in one round trip (the worker's
        hot path); returns the ack's reply unless done is empty, and the reservation unless
        count is 0."""
        acks = [part.ack(pairs(group)) for part, group in self._parts.grouped(done)]
        first, *others = self._parts.reading_order()
        calls: list[Call[Any]] = [*acks, first.lease(count)] if count else [*acks]
        results = self._runner.run_all(calls) if calls else []
        settled = merge_settled(results[: len(acks)]) if done else None
        if not count:
            return settled, None
        return settled, self._next_partitions(results[-1], others, count)

    def _bury_undecodable(self, reservation: Reservation) -> None:
        """Send leased jobs whose record cannot be decoded to the DLQ, with the reason."""
        part = self._parts.parts[reservation.partition]
        for job_id, token, exc in reservation.undecodable:
            log.error("queue %s: job %s has a corrupt record, moved to the DLQ: %s",
                      self.name, job_id, exc)
            self._runner.run(part.bury(job_id, token, ErrorInfo.from_exception(exc)))

    def _wake_keys(self) -> list[str]:
        return self.wake_keys(self._cluster)

    def ack(self, jobs: Job | Iterable[Job]) -> int:
        """Finish jobs; returns how many were acked (a job whose lease was lost counts 0)."""
        return self._settle(jobs, lambda part, group: part.ack(pairs(group))).count

    def fail(
        self, job: Job, error: BaseException | ErrorInfo, *, retry: bool = True
    ) -> Outcome:
        """Record a failed delivery: retry after the backoff while attempts remain (and
        ``retry``), else move the job to the dead-letter queue. Raises LeaseLostError if the
        lease is stale."""
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        return self._runner.run(self._parts.of(job).failure(job, info, retry)).outcome

    def extend(self, jobs: Job | Iterable[Job], seconds: float | None = None) -> int:
        """Heartbeat: lease held jobs for ``seconds`` more from now (default: the visibility
        timeout). Updates their ``lease_deadline``; returns how many were still held."""
        held = as_job_list(jobs)
        return renewed(held, self._settle(held, lambda part, group: part.heartbeat(group, seconds)))

    def release(self, jobs: Job | Iterable[Job]) -> int:
        """Give back leased jobs unstarted: front of ready, the delivery not counted."""
        return self._settle(jobs, lambda part, group: part.release(pairs(group))).count

    def _settle(
        self, jobs: Job | Iterable[Job], call: Callable[[QueueCalls, list[Job]], Call[Settled]]
    ) -> Settled:
        """One call per partition holding some of ``jobs``, in one round trip, replies merged."""
        calls = [call(part, group) for part, group in self._parts.grouped(as_job_list(jobs))]
        if not calls:
            return Settled(0, [])
        replies: list[Settled] = self._runner.run_all(calls)
        return replace(merge_settled(replies), deadline_ms=replies[0].deadline_ms)

    def process_job(self, job: Job) -> None:
        """Handle one job; override this (or pass ``handler=``). Raising fails the delivery;
        raise ``NonRetryableError`` to send the job straight to the dead-letter queue."""
        if self._handler is None:
            raise ConfigurationError(f"queue {self.name!r} has no handler: override process_job "
                                     "or register it with handler=")
        self._handler(job)

    def process_jobs(self, jobs: list[Job]) -> Mapping[str, BaseException] | None:
        """Handle a whole leased batch in one call; override this (or pass ``batch_handler=``)
        when jobs are cheaper together: one pipeline, one bulk insert. Return None when every
        job succeeded, or a mapping of failed job ids to their exceptions (the others are
        acked); raising fails the whole batch. Batches follow ``process(prefetch=...)``."""
        if self._batch_handler is None:
            raise ConfigurationError(f"queue {self.name!r} has no batch handler")
        return self._batch_handler(jobs)

    @property
    def handles_batches(self) -> bool:
        """Whether the worker hands this queue whole batches (``process_jobs``)."""
        return self._batch_handler is not None or (
            type(self).process_jobs is not BaseQueue.process_jobs)

    def process(
        self,
        concurrency: int = 1,
        *,
        max_jobs: int | None = None,
        burst: bool = False,
        idle_wait: float = 1.0,
        prefetch: int = DEFAULT_PREFETCH,
        install_signal_handlers: bool = True,
    ) -> WorkerReport:
        """Run the worker loop until SIGTERM/SIGINT, ``max_jobs`` deliveries, or (``burst``)
        until nothing is ready. In-flight jobs finish; unstarted ones go back to ready.
        ``concurrency`` threads each lease batches sized to about 0.1 s of work, at most
        ``prefetch`` jobs (use 1 for long jobs that must not wait behind each other)."""
        worker = Worker(self, concurrency=concurrency, max_jobs=max_jobs, burst=burst,
                        idle_wait=idle_wait, prefetch=prefetch)
        return worker.run(install_signal_handlers=install_signal_handlers)

    # -- inspecting ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Jobs per state: ready, delayed, leased, dead (one consistent read)."""
        return sum_counts(self._runner.run_all([p.counts() for p in self._parts.parts]))

    def stats(self) -> dict[str, int]:
        """The queue's counters (summed over partitions): added, completed, retried, dead,
        redriven, purged, ..."""
        pipe = self.client.pipeline(transaction=False)
        for part in self._parts.parts:
            pipe.hgetall(part.keys.key("stats"))
        return sum_counts({text(k): int(v) for k, v in raw.items()} for raw in pipe.execute())

    @contextmanager
    def lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> Iterator[str]:
        """Hold the item lock ``item`` (at most ``ttl`` seconds; waits up to ``wait`` to get
        it), released on exit only if still ours. Yields the lock's token."""
        key, waiting = self.keys.lock(item), LockWait(item, wait)
        ttl_ms = max(1, round(ttl * 1000))
        while (remaining := self._runner.run(lock_call(key, waiting.token, ttl_ms))) is not None:
            time.sleep(waiting.pause(remaining))
        try:
            yield waiting.token
        finally:
            self._runner.run(unlock_call(key, waiting.token))
