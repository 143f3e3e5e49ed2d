"""The sync worker behind ``BaseQueue.process``: ``concurrency`` slot threads (the caller's thread
is one of them) each drive the core's slot loop (``pyqcore.core.slot``), and one more thread
drives the heartbeat loop. What a slot does is decided there; this module is the threads, the
signals, and running handlers: a plain ``def`` handler in the slot's thread, an ``async def``
one on an event loop that the slot owns (so a coroutine is always awaited, never acked unrun).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from pyqcore.core.effects import Batch
from pyqcore.core.presence import presence_loop
from pyqcore.core.slot import (
    DEFAULT_PREFETCH,
    WorkerOptions,
    WorkerReport,
    heartbeat_loop,
    slot_loop,
)
from pyqcore.core.worker import WorkerBase, may_install_signal_handlers, reports_of
from pyqcore.handler_timeout import within
from pyqcore.job import Job, run_timeout
from pyqcore.sync.driver import SyncDriver

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_PREFETCH", "Worker", "WorkerReport", "run_in_threads", "stop_on_signals"]

log = logging.getLogger("pyqcore")


class Worker(WorkerBase):
    """Runs a sync ``BaseQueue``'s handler over its jobs; see the module docstring."""

    def __init__(self, queue: Any, *, concurrency: int = 1, stop: threading.Event | None = None,
                 **options: Unpack[WorkerOptions]) -> None:
        self.stop = stop or threading.Event()
        self._finished = threading.Event()
        self._alarm = threading.Event()
        super().__init__(queue, concurrency=concurrency, stop=self.stop,
                         finished=self._finished, alarm=self._alarm, driver="sync", **options)

    def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped; returns the report. Re-raises nothing a job raised."""
        name = self.queue.name
        heartbeat = threading.Thread(target=self._drive_heartbeat, daemon=True,
                                     name=f"pyqcore-heartbeat-{name}")
        presence = threading.Thread(target=self.queue.driver.run, daemon=True,
                                    args=(presence_loop(self.presence),),
                                    name=f"pyqcore-presence-{name}")
        slots = [threading.Thread(target=self._drive_slot, name=f"pyqcore-{name}-{i}")
                 for i in range(1, self.concurrency)]
        if self.schedules:  # stops with the heartbeat, once every slot has finished
            presence = threading.Thread(target=self._drive_presence_and_schedules, daemon=True,
                                        name=f"pyqcore-presence-{name}")
        with stop_on_signals(self.stop, install_signal_handlers), self.serving_metrics():
            heartbeat.start()
            presence.start()
            for slot in slots:
                slot.start()
            try:
                self._drive_slot()
            finally:
                for slot in slots:
                    slot.join()
                self._finished.set()
                self._alarm.set()
                heartbeat.join()
                presence.join()
        return self.outcome()

    def _drive_slot(self) -> None:
        with Handlers(self.queue) as handlers:
            self.queue.driver.drive(slot_loop(self.core, self.crew), handlers.perform)

    def _drive_presence_and_schedules(self) -> None:
        scheduler = threading.Thread(target=self.queue.driver.run, args=(self.scheduler_loop(),),
                                     daemon=True, name=f"pyqcore-scheduler-{self.queue.name}")
        scheduler.start()
        self.queue.driver.run(presence_loop(self.presence))
        scheduler.join()

    def _drive_heartbeat(self) -> None:
        self.queue.driver.run(heartbeat_loop(self.core, self.crew))


class Handlers:
    """One slot thread's effects: the queue's driver for Redis, plus running the handler on a
    ``Job`` effect (sending back what it raised, or None) and the batch handler on a ``Batch``
    effect. A handler that returns an awaitable (an ``async def``) is run to completion on this
    slot's own event loop."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._redis: SyncDriver = queue.driver
        self._loop: asyncio.AbstractEventLoop | None = None

    def perform(self, effect: Any) -> Any:
        kind = type(effect)
        if kind is Job:
            try:
                effect.result = self._finish(self.queue.process_job(effect), effect.timeout)
            except Exception as exc:  # a handler's failure is the job's, never the worker's
                return exc
            return None
        if kind is Batch:
            try:
                return self._finish(self.queue.process_jobs(effect.jobs),
                                    run_timeout(effect.jobs))
            except Exception as exc:  # a handler's failure is its jobs', never the worker's
                return exc
        return self._redis.perform(effect)

    def _finish(self, result: Any, timeout: float | None) -> Any:
        """What a handler returned, awaited on this slot's loop if it is awaitable (cancelled
        after ``timeout`` seconds: JobTimeoutError)."""
        if result is None or not inspect.isawaitable(result):
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(
            _awaited(result) if timeout is None else within(result, timeout))

    def __enter__(self) -> Handlers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def run_in_threads(workers: Mapping[str, Worker]) -> dict[str, WorkerReport]:
    """Run each worker in a thread of its own until every one has returned; their reports by
    name, or the first error a worker raised (it gave up) once all have returned. Signals are
    the caller's to handle (each runs with install_signal_handlers=False)."""
    outcomes: dict[str, WorkerReport | Exception] = {}

    def run(name: str, worker: Worker) -> Callable[[], None]:
        def target() -> None:
            try:
                outcomes[name] = worker.run(install_signal_handlers=False)
            except Exception as exc:
                outcomes[name] = exc

        return target

    threads = [threading.Thread(target=run(n, w), name=f"pyqcore-worker-{n}")
               for n, w in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return reports_of(outcomes)


@contextmanager
def stop_on_signals(stop: threading.Event, install: bool = True) -> Iterator[None]:
    """While inside, the first SIGTERM/SIGINT sets ``stop`` (a graceful stop); the previous
    handlers are then restored, so a second signal acts as it normally would. Signal handlers
    can only be installed from the main thread; elsewhere this does nothing."""
    if not may_install_signal_handlers(install):
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()  # before the log line, which then says no job starts any more
        log.info("%s received: finishing in-flight jobs", signal.Signals(signum).name)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
