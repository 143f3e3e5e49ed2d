"""The asyncio worker behind ``pyqcore.asyncio.BaseQueue.process``: ``concurrency`` slot tasks
each drive the core's slot loop (``pyqcore.core.slot``) and one more task drives the heartbeat
loop; the decisions are the sync worker's, written once. This module is the tasks, the signals
and calling handlers: an ``async def`` one awaited, a plain ``def`` one in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyqcore.api.queue import is_coroutine_function
from pyqcore.asyncio.driver import AsyncDriver
from pyqcore.core.effects import Batch
from pyqcore.core.slot import Crew, WorkerOptions, WorkerReport, heartbeat_loop, slot_loop
from pyqcore.job import Job
from pyqcore.sync.driver import longest_block

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("pyqcore")


class Worker:
    """Runs a queue's handler over its jobs in slot tasks; see the module docstring. ``queue``
    is a ``pyqcore.asyncio.BaseQueue``."""

    def __init__(self, queue: Any, *, concurrency: int = 1, stop: asyncio.Event | None = None,
                 **options: Unpack[WorkerOptions]) -> None:
        if not queue.has_handler:
            raise queue.missing_handler()
        self.queue = queue
        self.concurrency = concurrency
        self.stop = stop or asyncio.Event()
        self._finished = asyncio.Event()
        self._crew = Crew.of(queue.core, batches=queue.handles_batches, stop=self.stop,
                             finished=self._finished, concurrency=concurrency,
                             longest_block=longest_block(queue.driver.client), **options)
        self.idle_wait = self._crew.idle_wait  # capped below the client's socket timeout

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self._crew.tally.snapshot()

    async def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped; returns the report. Re-raises nothing a job raised."""
        driver: AsyncDriver = self.queue.driver
        with stop_on_signals(self.stop, install_signal_handlers):
            heartbeat = asyncio.create_task(driver.run(heartbeat_loop(self.queue.core,
                                                                      self._crew)))
            try:
                await asyncio.gather(*(driver.drive(slot_loop(self.queue.core, self._crew),
                                                    self._perform)
                                       for _ in range(self.concurrency)))
            finally:
                self._finished.set()
                await heartbeat
        return self.report

    async def _perform(self, effect: Any) -> Any:
        """A slot's effects: the handler on a ``Job`` (sending back what it raised, or None),
        the batch handler on a ``Batch``, Redis for the rest."""
        kind = type(effect)
        if kind is Job:
            try:
                await call_handler(self.queue.process_job, effect)
            except Exception as exc:  # a handler's failure is the job's, never the worker's
                return exc
            return None
        if kind is Batch:
            try:
                return await call_handler(self.queue.process_jobs, effect.jobs)
            except Exception as exc:  # a handler's failure is its jobs', never the worker's
                return exc
        return await self.queue.driver.perform(effect)


async def call_handler(handler: Callable[..., Any], argument: Any) -> Any:
    """Await an ``async def`` handler; run a plain one in a thread, so it cannot block the
    loop (awaiting what it returns, should that be a coroutine)."""
    if is_coroutine_function(handler):
        return await handler(argument)
    result = await asyncio.to_thread(handler, argument)
    return await result if asyncio.iscoroutine(result) else result


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, install: bool = True) -> Iterator[None]:
    """While inside, the first SIGTERM/SIGINT sets ``stop`` (a graceful stop); a second one
    acts as it normally would. Only in the main thread's running loop; elsewhere a no-op."""
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received: finishing in-flight jobs", sig.name)
        stop.set()
        for s in sigs:
            loop.remove_signal_handler(s)

    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
