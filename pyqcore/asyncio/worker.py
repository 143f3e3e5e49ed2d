"""The worker loop behind ``pyqcore.asyncio.BaseQueue.process``: ``concurrency`` slot tasks run
the same decisions as the threaded worker (``pyqcore.slots``): one round trip acks a slot's
finished jobs and leases its next batch, the batch runs (each job awaited in turn, or the whole
batch by ``process_jobs``), and an idle slot blocks on the wake list. A heartbeat task extends
held leases; SIGTERM/SIGINT finish in-flight jobs and release the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from pyqcore.errors import LeaseLostError
from pyqcore.job import Job
from pyqcore.slots import (
    DEFAULT_PREFETCH,
    TRANSIENT,
    Budget,
    Crew,
    Retrying,
    SlotPlan,
    WorkerReport,
    check_options,
    is_retryable,
    longest_block,
    sleep_timeout,
    split_batch,
)

if TYPE_CHECKING:
    from pyqcore.asyncio.queue import BaseQueue

log = logging.getLogger("pyqcore")
T = TypeVar("T")


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError itself from 3.11 on
        await asyncio.wait_for(stop.wait(), seconds)


class Worker:
    """Runs ``queue.process_job`` over the queue's jobs in slot tasks; see the module docstring."""

    def __init__(
        self,
        queue: BaseQueue,
        *,
        concurrency: int = 1,
        max_jobs: int | None = None,
        burst: bool = False,
        idle_wait: float = 1.0,
        prefetch: int = DEFAULT_PREFETCH,
        stop: asyncio.Event | None = None,
    ) -> None:
        check_options(concurrency, prefetch, max_jobs, idle_wait)
        self.queue = queue
        self.concurrency = concurrency
        self.idle_wait = min(idle_wait, longest_block(queue.client))
        self.stop = stop or asyncio.Event()
        self._crew = Crew(queue.name, self.stop, burst, prefetch, Budget(max_jobs))

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self._crew.tally.snapshot()

    async def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped; returns the report. Re-raises nothing a job raised."""
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            with stop_on_signals(self.stop, install_signal_handlers):
                await asyncio.gather(*(self._slot() for _ in range(self.concurrency)))
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return self.report

    async def _slot(self) -> None:
        """Ack what was done and lease the next batch in one round trip; run it; repeat."""
        plan = SlotPlan(self._crew)
        while plan.claim():
            try:
                settled, reservation = await self.queue._ack_and_reserve(plan.done, plan.wanted)
            except Exception as exc:
                await _pause(self.stop, plan.round_failed(exc))
                continue
            step = plan.round_done(settled, reservation)
            if step.action == "stop":
                return
            if step.action == "sleep":
                await self._sleep_until_woken(step.next_event_ms)
            elif step.action == "run":
                started = time.monotonic()
                done, ran = await self._run_batch(step.jobs)
                plan.batch_ran(done, ran, time.monotonic() - started)

    async def _run_batch(self, jobs: list[Job]) -> tuple[list[Job], int]:
        """Run a leased batch; returns the jobs to ack and how many ran. On a stop request the
        jobs not started yet are released."""
        if self.queue.handles_batches:
            if self.stop.is_set():
                await self._release(jobs)
                return [], 0
            failed: dict[str, BaseException]
            try:
                failed = dict(await self.queue.process_jobs(jobs) or {})
            except Exception as exc:  # a handler's failure is its jobs', never the worker's
                failed = {job.id: exc for job in jobs}
            done, failures = split_batch(self.queue.name, jobs, failed)
            for job, error in failures:
                await self._fail(job, error)
            return done, len(jobs)
        done = []
        for i, job in enumerate(jobs):
            if self.stop.is_set():
                await self._release(jobs[i:])
                return done, i
            try:
                await self.queue.process_job(job)
            except Exception as exc:  # a handler's failure is the job's, never the worker's
                await self._fail(job, exc)
            else:
                done.append(job)
        return done, len(jobs)

    async def _release(self, jobs: list[Job]) -> None:
        try:
            released = await self._retrying(lambda: self.queue.release(jobs), 0)
            self._crew.tally.add(released=released)
        except Exception:  # they go back to ready anyway, when their lease expires
            log.exception("queue %s: releasing unstarted jobs failed", self.queue.name)
        finally:
            self._crew.held.remove(jobs)

    async def _fail(self, job: Job, exc: Exception) -> None:
        retry = is_retryable(exc)
        outcome = None
        try:
            outcome = await self._retrying(lambda: self.queue.fail(job, exc, retry=retry), None)
        except LeaseLostError:
            self._crew.tally.add(lease_lost=1)
        except Exception:  # the delivery still counts: the job is redelivered after its lease
            log.exception("queue %s: recording the failure of job %s failed",
                          self.queue.name, job.id)
        finally:
            self._crew.held.remove([job])
        self._crew.record_failure(job, exc, outcome)

    async def _sleep_until_woken(self, next_event_ms: int | None) -> None:
        """Block on the wake list until an add (or retry) pushes a marker, the next delayed
        job or lease deadline is due, or ``idle_wait`` passes (to notice a stop request)."""
        timeout = sleep_timeout(self.idle_wait, next_event_ms, self.queue.settings.now_ms())
        try:
            await self.queue.client.blpop(self.queue.wake_keys(self.queue._cluster), timeout)
        except TRANSIENT as exc:
            log.warning("queue %s: waiting for jobs failed (%s)", self.queue.name, exc)
            await _pause(self.stop, 0.5)

    async def _heartbeat_loop(self) -> None:
        interval = self.queue.visibility_timeout / 3
        while True:
            await asyncio.sleep(interval)
            await self._renew(self._crew.held.due(interval))

    async def _renew(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            await self._retrying(lambda: self.queue.extend(jobs), 0)
        except Exception:  # the heartbeat must outlive any error: leases would lapse
            log.exception("queue %s: heartbeat failed", self.queue.name)

    async def _retrying(self, operation: Callable[[], Awaitable[T]], default: T) -> T:
        """Run a settling call, riding out a Redis outage or restart (see ``Retrying``)."""
        schedule = Retrying(self.queue.name, self.queue.visibility_timeout)
        while True:
            try:
                return await operation()
            except TRANSIENT as exc:
                delay = schedule.delay(exc)
                if delay is None:
                    return default
                await asyncio.sleep(delay)


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
