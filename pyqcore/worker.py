"""The worker loop behind ``BaseQueue.process``.

Three kinds of thread: the caller's thread reserves jobs (only as many as there are free
handler threads, so every leased job starts at once) and blocks on the queue's wake list when
there is nothing to do; a pool of ``concurrency`` threads runs ``process_job``; one finisher
thread acks finished jobs in batches, fails the ones that raised, and heartbeats the leases of
long jobs. A stop request (signal, ``max_jobs``, burst end) stops reserving; in-flight jobs
finish, and a job leased but not yet started is released back to ready uncounted.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyqcore.codes import Outcome
from pyqcore.errors import ConfigurationError, LeaseLostError, NonRetryableError
from pyqcore.job import Job

if TYPE_CHECKING:
    from pyqcore.queue import BaseQueue

log = logging.getLogger("pyqcore")
T = TypeVar("T")

_TRANSIENT = (RedisConnectionError, RedisTimeoutError)
_UNSTARTED = object()  # a finished() marker: the job was never handed to process_job


@dataclass
class WorkerReport:
    """What one ``process`` run did with the deliveries it took."""

    delivered: int = 0  # jobs leased, corrupt records included
    acked: int = 0
    retried: int = 0
    dead: int = 0  # failed for good, or corrupt: moved to the dead-letter queue
    released: int = 0  # leased but never started (shutdown): back to ready, uncounted
    lease_lost: int = 0  # finished after the lease was lost: the ack/fail was refused


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
        stop: threading.Event | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 0):
            raise ConfigurationError(f"max_jobs must be an int >= 0 or None, got {max_jobs!r}")
        if not idle_wait > 0:
            raise ConfigurationError(f"idle_wait must be > 0 seconds, got {idle_wait!r}")
        self.queue = queue
        self.concurrency = concurrency
        self.max_jobs = max_jobs
        self.burst = burst
        self.idle_wait = idle_wait
        self.stop = stop or threading.Event()
        self.report = WorkerReport()
        self._slots = threading.Semaphore(concurrency)
        self._finished: stdlib_queue.SimpleQueue[tuple[Job, object] | None] = (
            stdlib_queue.SimpleQueue()
        )
        self._in_flight: dict[tuple[str, str], tuple[Job, float]] = {}
        self._idle = threading.Condition()

    # -- the caller's thread: reserve and dispatch ---------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> WorkerReport:
        """Process until stopped; returns the report. Re-raises nothing a job raised."""
        finisher = threading.Thread(target=self._finish_loop, name="pyqcore-finisher",
                                    daemon=True)
        finisher.start()
        try:
            with stop_on_signals(self.stop, install_signal_handlers), ThreadPoolExecutor(
                self.concurrency, thread_name_prefix=f"pyqcore-{self.queue.name}"
            ) as pool:
                self._fetch_loop(pool)
        finally:
            self._wait_idle()
            self._finished.put(None)
            finisher.join()
        return self.report

    def _fetch_loop(self, pool: ThreadPoolExecutor) -> None:
        failures = 0
        while not self.stop.is_set():
            budget = self._budget()
            if budget == 0:
                return
            if not self._slots.acquire(timeout=0.2):
                continue
            taken = 1
            while taken < budget and self._slots.acquire(blocking=False):
                taken += 1
            with self._idle:
                was_idle = not self._in_flight
            try:
                reservation = self.queue._reserve(taken)
                failures = 0
            except _TRANSIENT as exc:
                self._release_slots(taken)
                failures += 1
                log.warning("queue %s: reserve failed (%s); retrying", self.queue.name, exc)
                self.stop.wait(_backoff(failures, cap=2.0))
                continue
            jobs = reservation.jobs
            self._release_slots(taken - len(jobs))
            self.report.delivered += len(jobs) + len(reservation.undecodable)
            self.report.dead += len(reservation.undecodable)
            now = time.monotonic()
            with self._idle:
                for job in jobs:
                    self._in_flight[job.id, job.token] = (job, now)
            for job in jobs:
                pool.submit(self._run_job, job)
            if not jobs and not reservation.undecodable:
                if self.burst:
                    if was_idle:  # nothing ready, and no running job can make one ready
                        return
                    self._wait_idle()
                else:
                    self._sleep_until_woken(reservation.next_event_ms)

    def _budget(self) -> int:
        """How many jobs the next reserve may take (0 = the run is over)."""
        if self.max_jobs is None:
            return self.concurrency
        return min(self.concurrency, self.max_jobs - self.report.delivered)

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _sleep_until_woken(self, next_event_ms: int | None) -> None:
        """Block on the wake list until an enqueue (or retry) pushes a marker, the next delayed
        job or lease deadline is due, or ``idle_wait`` passes (to notice a stop request)."""
        timeout = self.idle_wait
        if next_event_ms is not None:
            timeout = min(timeout, (next_event_ms - self.queue.settings.now_ms()) / 1000.0)
        try:
            self.queue.client.blpop([self.queue.keys.key("wake")], max(timeout, 0.01))
        except _TRANSIENT as exc:
            log.warning("queue %s: waiting for jobs failed (%s)", self.queue.name, exc)
            self.stop.wait(0.5)

    def _wait_idle(self) -> bool:
        """Wait until no job is in flight; True once idle."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight)

    # -- handler threads -----------------------------------------------------------------------

    def _run_job(self, job: Job) -> None:
        if self.stop.is_set():
            self._finished.put((job, _UNSTARTED))
            return
        outcome: object = None
        try:
            self.queue.process_job(job)
        except Exception as exc:  # a handler's failure is the job's, never the worker's
            outcome = exc
        self._finished.put((job, outcome))

    # -- the finisher thread -------------------------------------------------------------------

    def _finish_loop(self) -> None:
        heartbeat = self.queue.visibility_timeout / 3
        next_beat = time.monotonic() + heartbeat
        closing = False
        while not closing:
            batch, closing = self._drain(max(0.0, next_beat - time.monotonic()))
            try:
                if batch:
                    self._settle(batch)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + heartbeat
                    self._heartbeat(heartbeat)
            except Exception:  # this thread must outlive any error, or the worker hangs
                log.exception("queue %s: finishing jobs failed; their leases will expire and "
                              "they will be redelivered", self.queue.name)

    def _drain(self, timeout: float) -> tuple[list[tuple[Job, object]], bool]:
        """Everything finished so far (waiting up to ``timeout`` for the first), and whether
        the close marker was among it."""
        batch: list[tuple[Job, object]] = []
        closing = False
        try:
            item = self._finished.get(timeout=timeout)
            while True:
                if item is None:
                    closing = True
                else:
                    batch.append(item)
                item = self._finished.get_nowait()
        except stdlib_queue.Empty:
            return batch, closing

    def _settle(self, batch: list[tuple[Job, object]]) -> None:
        try:
            done = [job for job, outcome in batch if outcome is None]
            unstarted = [job for job, outcome in batch if outcome is _UNSTARTED]
            if done:
                acked = self._retrying(lambda: self.queue.ack(done), 0)
                self.report.acked += acked
                self.report.lease_lost += len(done) - acked
            if unstarted:
                self.report.released += self._retrying(lambda: self.queue.release(unstarted), 0)
            for job, outcome in batch:
                if isinstance(outcome, Exception):
                    self._fail(job, outcome)
        finally:  # whatever happened, these jobs are no longer ours to track
            with self._idle:
                for job, _ in batch:
                    self._in_flight.pop((job.id, job.token), None)
                self._idle.notify_all()
            self._release_slots(len(batch))

    def _fail(self, job: Job, exc: Exception) -> None:
        retry = not isinstance(exc, NonRetryableError)
        try:
            outcome = self._retrying(lambda: self.queue.fail(job, exc, retry=retry), None)
        except LeaseLostError:
            self.report.lease_lost += 1
            return
        if outcome is Outcome.RETRY:
            self.report.retried += 1
        elif outcome is Outcome.DEAD:
            self.report.dead += 1
        log.log(logging.WARNING if outcome is Outcome.DEAD else logging.INFO,
                "queue %s: job %s failed on attempt %d (%s: %s) -> %s", self.queue.name,
                job.id, job.attempt, type(exc).__name__, exc, outcome)

    def _heartbeat(self, min_age: float) -> None:
        """Extend the leases of jobs that have been running for ``min_age`` seconds or more."""
        now = time.monotonic()
        with self._idle:
            long_jobs = [job for job, started in self._in_flight.values()
                         if now - started >= min_age]
        if long_jobs:
            self._retrying(lambda: self.queue.extend(long_jobs), 0)

    def _retrying(self, operation: Callable[[], T], default: T) -> T:
        """Run a finishing operation, riding out a Redis outage or restart: retried with
        capped exponential backoff for up to one visibility timeout (at least 3 tries; past
        that the lease has probably been reclaimed). A job whose ack is given up on is
        redelivered after its lease: at-least-once, never lost."""
        give_up = time.monotonic() + self.queue.visibility_timeout
        attempt = 0
        while True:
            try:
                return operation()
            except _TRANSIENT as exc:
                attempt += 1
                if attempt >= 3 and time.monotonic() >= give_up:
                    break
                log.warning("queue %s: %s; retrying", self.queue.name, exc)
                time.sleep(_backoff(attempt, cap=1.0))
        log.error("queue %s: giving up on a finishing call; its jobs will be redelivered",
                  self.queue.name)
        return default


def _backoff(failures: int, *, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive transient errors: 0.1, 0.2, 0.4, ...
    up to ``cap`` (the exponent is bounded, so a long outage never overflows a float)."""
    return min(0.05 * (1 << min(failures, 16)), cap)


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
