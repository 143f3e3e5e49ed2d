"""The asyncio worker behind ``pyqcore.asyncio.BaseQueue.process``: ``concurrency`` slot tasks
each drive the core's slot loop (``pyqcore.core.slot``) and one more task drives the heartbeat
loop; the decisions are the sync worker's, written once. This module is the tasks, the signals
and calling handlers: an ``async def`` one awaited, a plain ``def`` one in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyqcore.api.queue import is_coroutine_function
from pyqcore.asyncio.driver import AsyncDriver
from pyqcore.core.effects import Batch
from pyqcore.core.presence import presence_loop
from pyqcore.core.slot import (
    WorkerOptions,
    WorkerReport,
    heartbeat_loop,
    slot_loop,
)
from pyqcore.core.worker import WorkerBase, may_install_signal_handlers
from pyqcore.handler_timeout import within
from pyqcore.job import Job, run_timeout

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("pyqcore")


class Worker(WorkerBase):
    """Runs a ``pyqcore.asyncio.BaseQueue``'s handler over its jobs in slot tasks; see the
    module docstring."""

    def __init__(self, queue: Any, *, concurrency: int = 1, stop: asyncio.Event | None = None,
                 **options: Unpack[WorkerOptions]) -> None:
        self.stop = stop or asyncio.Event()
        self._finished = asyncio.Event()
        self._alarm = asyncio.Event()
        super().__init__(queue, concurrency=concurrency, stop=self.stop,
                         finished=self._finished, alarm=self._alarm, driver="asyncio",
                         **options)
        self._run_job = awaitable(queue.process_job)
        self._run_batch = awaitable(queue.process_jobs)
        # A coroutine is cancelled at its timeout; a thread cannot be (the heartbeat fails
        # its jobs, and the slot waits for it)
        self._cancellable = (queue.handler_is_coroutine(), queue.handler_is_coroutine(True))

    async def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped (each slot a task); returns the report."""
        driver: AsyncDriver = self.queue.driver
        with stop_on_signals(self.stop, install_signal_handlers), self.serving_metrics():
            heartbeat = asyncio.create_task(driver.run(heartbeat_loop(self.core, self.crew)))
            presence = asyncio.create_task(driver.run(presence_loop(self.presence)))
            scheduler = asyncio.create_task(driver.run(self.scheduler_loop())) \
                if self.schedules else presence
            try:
                await asyncio.gather(*(driver.drive(slot_loop(self.core, self.crew),
                                                    self._perform)
                                       for _ in range(self.concurrency)))
            finally:
                self._finished.set()
                self._alarm.set()
                await asyncio.gather(heartbeat, presence, scheduler)
        return self.outcome()

    async def _perform(self, effect: Any) -> Any:
        """A slot's effects: the handler on a ``Job`` (sending back what it raised, or None),
        the batch handler on a ``Batch``, Redis for the rest."""
        kind = type(effect)
        if kind is Job:
            timeout = effect.timeout if self._cancellable[0] else None
            try:
                effect.result = await (self._run_job(effect) if timeout is None
                                       else within(self._run_job(effect), timeout))
            except Exception as exc:  # the job failed (the worker carries on)
                return exc
            return None
        if kind is Batch:
            timeout = run_timeout(effect.jobs) if self._cancellable[1] else None
            try:
                return await (self._run_batch(effect.jobs) if timeout is None
                              else within(self._run_batch(effect.jobs), timeout))
            except Exception as exc:  # every job of the batch failed
                return exc
        return await self.queue.driver.perform(effect)


def awaitable(handler: Callable[[Any], Any]) -> Callable[[Any], Awaitable[Any]]:
    """``handler`` as a coroutine function: an ``async def`` as it is; a plain one run in a
    thread, so it cannot block the loop (what it returns is awaited if it is a coroutine).
    Decided once per handler, not per job."""
    if is_coroutine_function(handler):
        return handler

    async def in_thread(argument: Any) -> Any:
        result = await asyncio.to_thread(handler, argument)
        return await result if asyncio.iscoroutine(result) else result

    return in_thread


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, install: bool = True) -> Iterator[None]:
    """While inside, the first SIGTERM/SIGINT sets ``stop`` (a graceful stop); a second one
    acts as it normally would. Only in the main thread's running loop; elsewhere a no-op."""
    if not may_install_signal_handlers(install):
        yield
        return
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM, signal.SIGINT)

    def on_signal(sig: signal.Signals) -> None:
        stop.set()  # before the log line, which then says no job starts any more
        log.info("%s received: finishing in-flight jobs", sig.name)
        for s in sigs:
            loop.remove_signal_handler(s)

    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
