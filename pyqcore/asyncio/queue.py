"""``BaseQueue`` for ``redis.asyncio`` clients: the methods of ``pyqcore.BaseQueue``, awaited
(both are declared once in ``pyqcore.api.queue``), with ``async def`` handlers. A plain
``def`` handler runs in a thread (``asyncio.to_thread``), so it never blocks the loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pyqcore.api.operation import Awaiting
from pyqcore.api.queue import QueueApi, QueueOptions, default_handler
from pyqcore.asyncio.driver import AsyncClient, AsyncDriver
from pyqcore.asyncio.worker import Worker, awaitable
from pyqcore.core.events import EventReader
from pyqcore.core.slot import WorkerOptions, WorkerReport
from pyqcore.events import Event, Since
from pyqcore.job import Job

if TYPE_CHECKING:
    from typing_extensions import Unpack

# A job handler: an ``async def``, or a plain function (run in a thread).
AsyncHandler = Callable[[Job], Awaitable[object] | object]
# Handles a leased batch at once; returns None, or the failed jobs' ids -> what they raised.
AsyncBatchHandler = Callable[
    [list[Job]], Awaitable[Mapping[str, BaseException] | None] | Mapping[str, BaseException] | None]


async def read_events(driver: AsyncDriver, reader: EventReader) -> AsyncIterator[Event]:
    """The events ``reader`` reads, one awaited read after another, until it stops."""
    while True:
        batch = await driver.run(reader.read())
        if batch is None:  # block= says to stop
            return
        for event in batch:
            yield event


class BaseQueue(QueueApi, Awaiting):
    """A named queue on a redis.asyncio client. Subclass it (set ``name``, override
    ``async def process_job`` or ``process_jobs``) or pass ``name=`` and ``handler=`` (or
    ``batch_handler=``). Jobs, keys and scripts are those of the sync queue: both APIs can
    serve the same queue at once."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        handler: AsyncHandler | None = None,
        batch_handler: AsyncBatchHandler | None = None,
        **options: Unpack[QueueOptions],
    ) -> None:
        super().__init__(AsyncDriver(client), handler=handler, batch_handler=batch_handler,
                         **options)
        self._handler: Callable[[Job], Awaitable[Any]] | None = None  # handler=, awaitable
        self._batch_handler: Callable[[list[Job]], Awaitable[Any]] | None = None

    @default_handler
    async def process_job(self, job: Job) -> Any:
        """Handle one job; override this (or pass ``handler=``). Raising fails the delivery;
        ``NonRetryableError`` sends the job straight to the dead-letter queue."""
        if self._handler is None:
            self._handler = awaitable(self.given_handler())
        return await self._handler(job)

    @default_handler
    async def process_jobs(self, jobs: list[Job]) -> Any:
        """Handle a whole leased batch in one call (see ``pyqcore.BaseQueue.process_jobs``)."""
        if self._batch_handler is None:
            self._batch_handler = awaitable(self.given_handler(batches=True))
        return await self._batch_handler(jobs)

    async def process(self, concurrency: int = 1, *, install_signal_handlers: bool = True,
                      **options: Unpack[WorkerOptions]) -> WorkerReport:
        """The worker loop (see ``pyqcore.BaseQueue.process``), with ``concurrency`` tasks."""
        worker = Worker(self, concurrency=concurrency, **options)
        return await worker.run(install_signal_handlers=install_signal_handlers)

    def events(self, since: Since = None, *, block: bool | float = True) -> AsyncIterator[Event]:
        """The queue's events (see ``pyqcore.BaseQueue.events``), iterated with ``async for``."""
        reader = self.core.event_reader(since, block)  # its arguments checked now, not later
        return read_events(self.driver, reader)

    @asynccontextmanager
    async def lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> AsyncIterator[str]:
        """Hold the item lock ``item`` (see ``pyqcore.BaseQueue.lock``); yields its token."""
        token = await self.driver.run(self.core.acquire_lock(item, ttl, wait))
        try:
            yield token
        finally:
            await self.driver.run(self.core.release_lock(item, token))

