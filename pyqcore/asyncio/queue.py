"""``BaseQueue`` for ``redis.asyncio`` clients: the same names, settings, scripts and replies as
``pyqcore.BaseQueue``, with awaitable methods and ``async def process_job``. Both are built on
``QueueDefinition`` and the sans-I/O core; only the sending differs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster

from pyqcore.asyncio.runner import AsyncClient, AsyncRunner
from pyqcore.asyncio.worker import Worker
from pyqcore.codes import Outcome
from pyqcore.core import Call, QueueCalls, Reservation, Settled, lock_call, text, unlock_call
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
from pyqcore.job import ErrorInfo, Job
from pyqcore.partitions import merge_settled
from pyqcore.slots import DEFAULT_PREFETCH, WorkerReport

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("pyqcore")

AsyncHandler = Callable[[Job], Awaitable[object]]
# Handles a leased batch at once; returns None, or the failed jobs' ids -> what they raised.
AsyncBatchHandler = Callable[[list[Job]], Awaitable[Mapping[str, BaseException] | None]]


class BaseQueue(QueueDefinition):
    """A named queue on a redis.asyncio client. Subclass it (set ``name``, override
    ``async def process_job`` or ``process_jobs``) or pass ``name=`` and ``handler=`` (or
    ``batch_handler=``), coroutine functions. Jobs, keys and scripts are those of the sync
    queue: both APIs can serve the same queue at once."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        handler: AsyncHandler | None = None,
        batch_handler: AsyncBatchHandler | None = None,
        **options: Unpack[QueueOptions],
    ) -> None:
        super().__init__(**options)
        if handler is not None and batch_handler is not None:
            raise ConfigurationError("pass handler= or batch_handler=, not both")
        self.client = client
        self._handler = handler
        self._batch_handler = batch_handler
        self._runner = AsyncRunner(client)
        self._cluster = isinstance(client, RedisCluster)

    # -- producing -----------------------------------------------------------------------------

    async def add(
        self, payload: Any, *, context: Any = None, delay: float = 0.0,
        job_id: str | None = None, partition_key: str | None = None,
    ) -> str:
        """Add one job; returns its id (see ``pyqcore.BaseQueue.add``)."""
        return await self._runner.run(self._parts.add_one(payload, context, delay, job_id,
                                                          partition_key))

    async def add_batch(
        self,
        payloads: Iterable[Any],
        *,
        context: Any = None,
        delay: float = 0.0,
        job_ids: Sequence[str | None] | None = None,
        partition_keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Add many jobs in one round trip; returns their ids in order. Every payload is
        encoded before anything is written (see ``pyqcore.BaseQueue.add_batch``)."""
        payloads, ids, keys = batch_arguments(payloads, job_ids, partition_keys)
        calls, positions = self._parts.add(payloads, [context] * len(payloads), delay, ids, keys)
        return in_caller_order(await self._runner.run_all(calls), positions, len(payloads))

    # -- consuming -----------------------------------------------------------------------------

    async def reserve(
        self, count: int = 1, *, visibility_timeout: float | None = None
    ) -> list[Job]:
        """Lease up to ``count`` ready jobs; undecodable records go to the dead-letter queue."""
        first, *others = self._parts.reading_order()
        reservation = await self._runner.run(first.lease(count, visibility_timeout))
        return (await self._next_partitions(reservation, others, count,
                                            visibility_timeout)).jobs

    async def _next_partitions(
        self, reservation: Reservation, others: list[QueueCalls], count: int,
        visibility_timeout: float | None = None,
    ) -> Reservation:
        """While a partition had nothing, try the next ones: a worker never sleeps while
        another partition has ready jobs."""
        soonest = reservation.next_event_ms
        for part in others:
            if reservation.jobs or reservation.undecodable:
                break
            reservation = await self._runner.run(part.lease(count, visibility_timeout))
            if reservation.next_event_ms is not None:
                soonest = min(soonest or reservation.next_event_ms, reservation.next_event_ms)
        part = self._parts.parts[reservation.partition]
        for job_id, token, exc in reservation.undecodable:
            log.error("queue %s: job %s has a corrupt record, moved to the DLQ: %s",
                      self.name, job_id, exc)
            await self._runner.run(part.bury(job_id, token, ErrorInfo.from_exception(exc)))
        return replace(reservation, next_event_ms=soonest)

    async def _ack_and_reserve(
        self, done: list[Job], count: int
    ) -> tuple[Settled | None, Reservation | None]:
        """Ack ``done`` and lease up to ``count`` more jobs in one round trip."""
        acks = [part.ack(pairs(group)) for part, group in self._parts.grouped(done)]
        first, *others = self._parts.reading_order()
        calls: list[Call[Any]] = [*acks, first.lease(count)] if count else [*acks]
        results = await self._runner.run_all(calls) if calls else []
        settled = merge_settled(results[: len(acks)]) if done else None
        if not count:
            return settled, None
        return settled, await self._next_partitions(results[-1], others, count)

    async def ack(self, jobs: Job | Iterable[Job]) -> int:
        """Finish jobs; returns how many were acked (a job whose lease was lost counts 0)."""
        return (await self._settle(jobs, lambda part, group: part.ack(pairs(group)))).count

    async def fail(
        self, job: Job, error: BaseException | ErrorInfo, *, retry: bool = True
    ) -> Outcome:
        """Retry after the backoff while attempts remain (and ``retry``), else bury; raises
        LeaseLostError if the lease is stale."""
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        return (await self._runner.run(self._parts.of(job).failure(job, info, retry))).outcome

    async def extend(self, jobs: Job | Iterable[Job], seconds: float | None = None) -> int:
        """Heartbeat: lease held jobs for ``seconds`` more from now; returns how many."""
        held = as_job_list(jobs)
        return renewed(held, await self._settle(
            held, lambda part, group: part.heartbeat(group, seconds)))

    async def release(self, jobs: Job | Iterable[Job]) -> int:
        """Give back leased jobs unstarted: front of ready, the delivery not counted."""
        return (await self._settle(jobs, lambda part, group: part.release(pairs(group)))).count

    async def _settle(
        self, jobs: Job | Iterable[Job], call: Callable[[QueueCalls, list[Job]], Call[Settled]]
    ) -> Settled:
        calls = [call(part, group) for part, group in self._parts.grouped(as_job_list(jobs))]
        if not calls:
            return Settled(0, [])
        replies: list[Settled] = await self._runner.run_all(calls)
        return replace(merge_settled(replies), deadline_ms=replies[0].deadline_ms)

    async def process_job(self, job: Job) -> None:
        """Handle one job; override this (or pass ``handler=``). Raising fails the delivery;
        ``NonRetryableError`` sends the job straight to the dead-letter queue."""
        if self._handler is None:
            raise ConfigurationError(f"queue {self.name!r} has no handler: override process_job "
                                     "or pass handler=")
        await self._handler(job)

    async def process_jobs(self, jobs: list[Job]) -> Mapping[str, BaseException] | None:
        """Handle a whole leased batch in one call (see ``pyqcore.BaseQueue.process_jobs``)."""
        if self._batch_handler is None:
            raise ConfigurationError(f"queue {self.name!r} has no batch handler")
        return await self._batch_handler(jobs)

    @property
    def handles_batches(self) -> bool:
        """Whether the worker hands this queue whole batches (``process_jobs``)."""
        return self._batch_handler is not None or (
            type(self).process_jobs is not BaseQueue.process_jobs)

    async def process(
        self,
        concurrency: int = 1,
        *,
        max_jobs: int | None = None,
        burst: bool = False,
        idle_wait: float = 1.0,
        prefetch: int = DEFAULT_PREFETCH,
        install_signal_handlers: bool = True,
    ) -> WorkerReport:
        """The worker loop (see ``pyqcore.BaseQueue.process``), with ``concurrency`` tasks."""
        worker = Worker(self, concurrency=concurrency, max_jobs=max_jobs, burst=burst,
                        idle_wait=idle_wait, prefetch=prefetch)
        return await worker.run(install_signal_handlers=install_signal_handlers)

    # -- inspecting ----------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Jobs per state: ready, delayed, leased, dead."""
        return sum_counts(await self._runner.run_all([p.counts() for p in self._parts.parts]))

    async def stats(self) -> dict[str, int]:
        """The queue's counters, summed over partitions."""
        pipe = self.client.pipeline(transaction=False)
        for part in self._parts.parts:
            pipe.hgetall(part.keys.key("stats"))
        return sum_counts({text(k): int(v) for k, v in raw.items()}
                          for raw in await pipe.execute())

    @asynccontextmanager
    async def lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> AsyncIterator[str]:
        """Hold the item lock ``item`` (see ``pyqcore.BaseQueue.lock``); yields its token."""
        key, waiting = self.keys.lock(item), LockWait(item, wait)
        ttl_ms = max(1, round(ttl * 1000))
        while (remaining := await self._runner.run(lock_call(key, waiting.token, ttl_ms))) \
                is not None:
            await asyncio.sleep(waiting.pause(remaining))
        try:
            yield waiting.token
        finally:
            await self._runner.run(unlock_call(key, waiting.token))
