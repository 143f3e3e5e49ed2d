"""The worker loop behind ``BaseQueue.process``.

``concurrency`` slot threads (the caller's thread is one of them) run the same loop: one round
trip acks the jobs the slot finished and leases its next batch; the slot runs the batch, one
job after another; round again. When nothing is ready a slot blocks on the queue's wake list
(an enqueue, a retry or the next due time wakes it), so an idle worker does not poll.

The batch size adapts to how long jobs take: about ``BATCH_SECONDS`` of work per batch, from 1
up to ``prefetch`` jobs. Fast jobs then cost a small share of a round trip each, and slow jobs
are leased one at a time, so none waits behind another. A heartbeat thread extends the lease
of every job a slot holds for longer than a third of the visibility timeout. The decisions
themselves live in ``pyqcore.slots``, shared with the asyncio worker; this module is the
threads and the waiting.

A stop request (SIGTERM/SIGINT, ``max_jobs`` reached, or in ``burst`` mode nothing ready) lets
each slot finish the job it is running, ack, and release the rest of its batch back to the
front of ready without counting the delivery. Redis errors are ridden out with capped
backoff: the worker reconnects and carries on; a job whose ack is lost is redelivered after its
lease (at-least-once, never lost).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
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
    from pyqcore.queue import BaseQueue

__all__ = ["DEFAULT_PREFETCH", "Worker", "WorkerReport", "stop_on_signals"]

log = logging.getLogger("pyqcore")
T = TypeVar("T")


class Worker:
    """Runs ``queue.process_job`` over the queue's jobs; see the module docstring."""

    def __init__(
        self,
        queue: BaseQueue,
        *,
        concurrency: int = 1,
        max_jobs: int | None = None,
        burst: bool = False,
        idle_wait: float = 1.0,
        prefetch: int = DEFAULT_PREFETCH,
        stop: threading.Event | None = None,
    ) -> None:
        check_options(concurrency, prefetch, max_jobs, idle_wait)
        self.queue = queue
        self.concurrency = concurrency
        self.idle_wait = min(idle_wait, longest_block(queue.client))
        self.stop = stop or threading.Event()
        self._crew = Crew(queue.name, self.stop, burst, prefetch, Budget(max_jobs))
        self._finished = threading.Event()

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self._crew.tally.snapshot()

    def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped; returns the report. Re-raises nothing a job raised."""
        heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                     name=f"pyqcore-heartbeat-{self.queue.name}")
        slots = [threading.Thread(target=self._slot, name=f"pyqcore-{self.queue.name}-{i}")
                 for i in range(1, self.concurrency)]
        with stop_on_signals(self.stop, install_signal_handlers):
            heartbeat.start()
            for slot in slots:
                slot.start()
            try:
                self._slot()
            finally:
                for slot in slots:
                    slot.join()
                self._finished.set()
                heartbeat.join()
        return self.report

    # -- one slot ------------------------------------------------------------------------------

    def _slot(self) -> None:
        """Ack what was done and lease the next batch in one round trip; run it; repeat."""
        plan = SlotPlan(self._crew)
        while plan.claim():
            try:
                settled, reservation = self.queue._ack_and_reserve(plan.done, plan.wanted)
            except Exception as exc:
                self.stop.wait(plan.round_failed(exc))
                continue
            step = plan.round_done(settled, reservation)
            if step.action == "stop":
                return
            if step.action == "sleep":
                self._sleep_until_woken(step.next_event_ms)
            elif step.action == "run":
                started = time.monotonic()
                done, ran = self._run_batch(step.jobs)
                plan.batch_ran(done, ran, time.monotonic() - started)

    def _run_batch(self, jobs: list[Job]) -> tuple[list[Job], int]:
        """Run a leased batch; returns the jobs to ack and how many ran. On a stop request the
        jobs not started yet are released."""
        if self.queue.handles_batches:
            return self._run_whole_batch(jobs)
        done: list[Job] = []
        for i, job in enumerate(jobs):
            if self.stop.is_set():
                self._release(jobs[i:])
                return done, i
            try:
                self.queue.process_job(job)
            except Exception as exc:  # a handler's failure is the job's, never the worker's
                self._fail(job, exc)
            else:
                done.append(job)
        return done, len(jobs)

    def _run_whole_batch(self, jobs: list[Job]) -> tuple[list[Job], int]:
        """``process_jobs`` over the batch in one call: the jobs it reports are failed with
        their exception, every job if it raises, and the others are acked."""
        if self.stop.is_set():
            self._release(jobs)
            return [], 0
        failed: dict[str, BaseException]
        try:
            failed = dict(self.queue.process_jobs(jobs) or {})
        except Exception as exc:  # a handler's failure is its jobs', never the worker's
            failed = {job.id: exc for job in jobs}
        done, failures = split_batch(self.queue.name, jobs, failed)
        for job, error in failures:
            self._fail(job, error)
        return done, len(jobs)

    def _release(self, jobs: list[Job]) -> None:
        try:
            self._crew.tally.add(released=self._retrying(lambda: self.queue.release(jobs), 0))
        except Exception:  # they go back to ready anyway, when their lease expires
            log.exception("queue %s: releasing unstarted jobs failed", self.queue.name)
        finally:
            self._crew.held.remove(jobs)

    def _fail(self, job: Job, exc: Exception) -> None:
        retry = is_retryable(exc)
        outcome = None
        try:
            outcome = self._retrying(lambda: self.queue.fail(job, exc, retry=retry), None)
        except LeaseLostError:
            self._crew.tally.add(lease_lost=1)
        except Exception:  # the delivery still counts: the job is redelivered after its lease
            log.exception("queue %s: recording the failure of job %s failed",
                          self.queue.name, job.id)
        finally:
            self._crew.held.remove([job])
        self._crew.record_failure(job, exc, outcome)

    def _sleep_until_woken(self, next_event_ms: int | None) -> None:
        """Block on the wake list until an enqueue (or retry) pushes a marker, the next delayed
        job or lease deadline is due, or ``idle_wait`` passes (to notice a stop request)."""
        timeout = sleep_timeout(self.idle_wait, next_event_ms, self.queue.settings.now_ms())
        try:
            self.queue.client.blpop(self.queue._wake_keys(), timeout)
        except TRANSIENT as exc:
            log.warning("queue %s: waiting for jobs failed (%s)", self.queue.name, exc)
            self.stop.wait(0.5)

    # -- the heartbeat thread ------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.queue.visibility_timeout / 3
        while not self._finished.wait(interval):
            self._renew(self._crew.held.due(interval))

    def _renew(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            self._retrying(lambda: self.queue.extend(jobs), 0)
        except Exception:  # the heartbeat thread must outlive any error: leases would lapse
            log.exception("queue %s: heartbeat failed", self.queue.name)

    def _retrying(self, operation: Callable[[], T], default: T) -> T:
        """Run a settling call, riding out a Redis outage or restart (see ``Retrying``)."""
        schedule = Retrying(self.queue.name, self.queue.visibility_timeout)
        while True:
            try:
                return operation()
            except TRANSIENT as exc:
                delay = schedule.delay(exc)
                if delay is None:
                    return default
                time.sleep(delay)


@contextmanager
def stop_on_signals(stop: threading.Event, install: bool = True) -> Iterator[None]:
    """While inside, the first SIGTERM/SIGINT sets ``stop`` (a graceful stop); the previous
    handlers are then restored, so a second signal acts as it normally would. Signal handlers
    can only be installed from the main thread; elsewhere this does nothing."""
    if not install or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: finishing in-flight jobs", signal.Signals(signum).name)
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
