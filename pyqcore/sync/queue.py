"""``BaseQueue``: the synchronous API of one queue, ``QueueApi`` over the blocking driver.
Every method that talks to Redis is declared once in ``pyqcore.api.queue``; this module adds
what is sync-only: the default handlers, the worker loop, and the item-lock context manager."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyqcore.api.operation import Blocking
from pyqcore.api.queue import QueueApi, QueueOptions, default_handler
from pyqcore.core.events import EventReader
from pyqcore.core.slot import WorkerOptions, WorkerReport
from pyqcore.events import Event, Since
from pyqcore.job import Job
from pyqcore.sync.driver import Client, SyncDriver
from pyqcore.sync.worker import Worker

if TYPE_CHECKING:
    from typing_extensions import Unpack

# A job handler: a plain function, or an ``async def`` (run on the worker slot's own loop).
Handler = Callable[[Job], object]
# Handles a leased batch at once; returns None, or the failed jobs' ids -> what they raised.
BatchHandler = Callable[[list[Job]], Mapping[str, BaseException] | None]


def read_events(driver: SyncDriver, reader: EventReader) -> Iterator[Event]:
    """The events ``reader`` reads, one blocking read after another, until it stops."""
    while (batch := driver.run(reader.read())) is not None:
        yield from batch


class BaseQueue(QueueApi, Blocking):
    """A named queue. Subclass it (set ``name``, override ``process_job``, or ``process_jobs``
    for whole batches) or pass ``name=`` and ``handler=`` (or ``batch_handler=``). Class
    attributes are the defaults; constructor arguments override them (see QueueOptions).
    A handler may be a plain function or an ``async def``."""

    def __init__(
        self,
        client: Client,
        *,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        **options: Unpack[QueueOptions],
    ) -> None:
        super().__init__(SyncDriver(client), handler=handler, batch_handler=batch_handler,
                         **options)

    @default_handler
    def process_job(self, job: Job) -> Any:
        """Handle one job; override this (or pass ``handler=``). Raising fails the delivery;
        raise ``NonRetryableError`` to send the job straight to the dead-letter queue."""
        return self.given_handler()(job)

    @default_handler
    def process_jobs(self, jobs: list[Job]) -> Any:
        """Handle a whole leased batch in one call; override this (or pass ``batch_handler=``)
        when jobs are cheaper together: one pipeline, one bulk insert. Return None when every
        job succeeded, or a mapping of failed job ids to their exceptions (the others are
        acked); raising fails the whole batch. Batches follow ``process(prefetch=...)``."""
        return self.given_handler(batches=True)(jobs)

    def process(self, concurrency: int = 1, *, install_signal_handlers: bool = True,
                **options: Unpack[WorkerOptions]) -> WorkerReport:
        """Run the worker loop until SIGTERM/SIGINT, ``max_jobs`` deliveries, or (``burst``)
        until nothing is ready. In-flight jobs finish; unstarted ones go back to ready.
        ``concurrency`` threads each lease batches sized to about 0.1 s of work, at most
        ``prefetch`` jobs (100; use 1 for long jobs that must not wait behind each other).
        ``idle_wait`` (1 s) bounds each wait for work, to notice a stop request. After
        ``give_up_after`` seconds of Redis failing (30 in burst mode, never otherwise) it
        raises RedisUnavailableError (or the error it gave up on). ``metrics=True`` records
        run times and waits for Prometheus, and ``metrics_port`` also serves them while the
        worker runs (``pyqcore.worker_metrics``)."""
        worker = Worker(self, concurrency=concurrency, **options)
        return worker.run(install_signal_handlers=install_signal_handlers)

    def events(self, since: Since = None, *,
               block: bool | float = True) -> Iterator[Event]:
        """The queue's events, oldest first per partition (needs ``events=True``; with
        ``store_results`` alone, the terminal ones). ``since``: None (from now on), 0 (every
        event kept), an entry id (after it: resume from ``event.entry_id``) or an aware
        datetime. ``block``: True waits for the next event forever, False stops when none is
        left, a number of seconds stops after that long without one. Blocking reads, no
        polling (a partitioned queue on a Redis Cluster: see the README)."""
        return read_events(self.driver, self.core.event_reader(since, block))  # checked now

    @contextmanager
    def lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> Iterator[str]:
        """Hold the item lock ``item`` (at most ``ttl`` seconds; waits up to ``wait`` to get
        it), released on exit only if still ours. Yields the lock's token."""
        token = self.driver.run(self.core.acquire_lock(item, ttl, wait))
        try:
            yield token
        finally:
            self.driver.run(self.core.release_lock(item, token))
