"""The worker loop behind ``BaseQueue.process``.

``concurrency`` slot threads (the caller's thread is one of them) run the same loop: one round
trip acks the jobs the slot finished and leases its next batch; the slot runs the batch, one
job after another; round again. When nothing is ready a slot blocks on the queue's wake list
(an enqueue, a retry or the next due time wakes it), so an idle worker does not poll.

The batch size adapts to how long jobs take: about ``BATCH_SECONDS`` of work per batch, from 1
up to ``prefetch`` jobs. Fast jobs then cost a small share of a round trip each, and slow jobs
are leased one at a time, so none waits behind another. A heartbeat thread extends the lease
of every job a slot holds for longer than a third of the visibility timeout.

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
from dataclasses import dataclass, fields
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from redis.exceptions import ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyqcore.codes import Outcome
from pyqcore.errors import ConfigurationError, LeaseLostError, NonRetryableError
from pyqcore.job import Job

if TYPE_CHECKING:
    from pyqcore.queue import BaseQueue

log = logging.getLogger("pyqcore")
T = TypeVar("T")

# A cluster in mid-failover answers CLUSTERDOWN or TRYAGAIN, or the client's slot map has a
# hole, until a replica is promoted: as passing as a refused connection.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
              SlotNotCoveredError)
BATCH_SECONDS = 0.1  # work per leased batch that the adaptive batch size aims at
DEFAULT_PREFETCH = 100  # most jobs one slot leases at once, unless process(prefetch=...)


@dataclass
class WorkerReport:
    """What one ``process`` run did with the deliveries it took."""

    delivered: int = 0  # jobs leased, corrupt records included
    acked: int = 0
    retried: int = 0
    dead: int = 0  # failed for good, or corrupt: moved to the dead-letter queue
    released: int = 0  # leased but never started (shutdown): back to ready, uncounted
    lease_lost: int = 0  # finished after the lease was lost: the ack/fail was refused


class _Tally:
    """A WorkerReport that several slot threads add to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._report = WorkerReport()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self._report, name, getattr(self._report, name) + value)

    def snapshot(self) -> WorkerReport:
        with self._lock:
            return WorkerReport(**{f.name: getattr(self._report, f.name)
                                   for f in fields(WorkerReport)})


class _Budget:
    """The deliveries ``max_jobs`` still allows, claimed by slots before they reserve."""

    def __init__(self, total: int | None) -> None:
        self._left = total
        self._lock = threading.Lock()

    def claim(self, wanted: int) -> int:
        with self._lock:
            if self._left is None:
                return wanted
            granted = min(wanted, self._left)
            self._left -= granted
            return granted

    def give_back(self, unused: int) -> None:
        if unused > 0:
            with self._lock:
                if self._left is not None:
                    self._left += unused


class _Held:
    """Jobs leased by any slot and not yet settled, with when their lease was last renewed."""

    def __init__(self) -> None:
        self._jobs: dict[tuple[str, str], tuple[Job, float]] = {}
        self._lock = threading.Lock()

    def add(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        with self._lock:
            for job in jobs:
                self._jobs[job.id, job.token] = (job, now)

    def remove(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._jobs.pop((job.id, job.token), None)

    def due(self, age: float) -> list[Job]:
        """Jobs whose lease was renewed ``age`` seconds ago or more; marks them renewed now."""
        now = time.monotonic()
        with self._lock:
            old = [job for job, since in self._jobs.values() if now - since >= age]
            for job in old:
                self._jobs[job.id, job.token] = (job, now)
        return old


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
        for name, value, low in (("concurrency", concurrency, 1), ("prefetch", prefetch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be an int >= {low}, got {value!r}")
        if max_jobs is not None and (not isinstance(max_jobs, int) or max_jobs < 0):
            raise ConfigurationError(f"max_jobs must be an int >= 0 or None, got {max_jobs!r}")
        if not idle_wait > 0:
            raise ConfigurationError(f"idle_wait must be > 0 seconds, got {idle_wait!r}")
        self.queue = queue
        self.concurrency = concurrency
        self.burst = burst
        self.idle_wait = min(idle_wait, _longest_block(queue.client))
        self.prefetch = prefetch
        self.stop = stop or threading.Event()
        self._budget = _Budget(max_jobs)
        self._tally = _Tally()
        self._held = _Held()
        self._finished = threading.Event()

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self._tally.snapshot()

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
        done: list[Job] = []
        size, failures = 1, 0
        while True:
            wanted = 0 if self.stop.is_set() else self._budget.claim(size)
            if not wanted and not done:
                return
            try:
                settled, reservation = self.queue._ack_and_reserve(done, wanted)
            except Exception as exc:
                self._budget.give_back(wanted)
                failures += 1
                if isinstance(exc, _TRANSIENT):  # keep the acks: sent again on reconnect
                    log.warning("queue %s: %s; retrying", self.queue.name, exc)
                else:  # e.g. a clobbered key: these jobs are redelivered after their lease
                    log.exception("queue %s: acking or reserving failed", self.queue.name)
                    self._held.remove(done)
                    done = []
                self.stop.wait(_backoff(failures, cap=2.0))
                continue
            failures = 0
            if settled is not None:
                self._held.remove(done)
                self._tally.add(acked=settled.count, lease_lost=len(done) - settled.count)
            done = []
            if reservation is None:
                return
            jobs, buried = reservation.jobs, len(reservation.undecodable)
            self._budget.give_back(wanted - len(jobs) - buried)
            self._tally.add(delivered=len(jobs) + buried, dead=buried)
            if not jobs:
                if buried:
                    continue
                if self.burst:  # nothing ready, and this slot holds nothing that could be
                    return
                self._sleep_until_woken(reservation.next_event_ms)
                continue
            started = time.monotonic()
            done, ran = self._run_batch(jobs)
            size = self._next_size(size, time.monotonic() - started, ran)

    def _run_batch(self, jobs: list[Job]) -> tuple[list[Job], int]:
        """Run a leased batch; returns the jobs to ack and how many ran. On a stop request the
        jobs not started yet are released."""
        self._held.add(jobs)
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
        done: list[Job] = []
        for job in jobs:
            error = failed.pop(job.id, None)
            if error is None:
                done.append(job)
            else:
                self._fail(job, error if isinstance(error, Exception) else RuntimeError(error))
        if failed:
            log.warning("queue %s: process_jobs reported ids not in its batch: %s",
                        self.queue.name, sorted(failed)[:10])
        return done, len(jobs)

    def _next_size(self, size: int, elapsed: float, ran: int) -> int:
        """About BATCH_SECONDS of work per batch: at most doubling, at least one job."""
        if not ran:
            return size
        ideal = int(BATCH_SECONDS * ran / max(elapsed, 1e-9))
        return max(1, min(ideal, 2 * size, self.prefetch))

    def _release(self, jobs: list[Job]) -> None:
        try:
            self._tally.add(released=self._retrying(lambda: self.queue.release(jobs), 0))
        except Exception:  # they go back to ready anyway, when their lease expires
            log.exception("queue %s: releasing unstarted jobs failed", self.queue.name)
        finally:
            self._held.remove(jobs)

    def _fail(self, job: Job, exc: Exception) -> None:
        retry = not isinstance(exc, NonRetryableError)
        try:
            outcome = self._retrying(lambda: self.queue.fail(job, exc, retry=retry), None)
        except LeaseLostError:
            self._tally.add(lease_lost=1)
            return
        except Exception:  # the delivery still counts: the job is redelivered after its lease
            log.exception("queue %s: recording the failure of job %s failed",
                          self.queue.name, job.id)
            return
        finally:
            self._held.remove([job])
        if outcome is Outcome.RETRY:
            self._tally.add(retried=1)
        elif outcome is Outcome.DEAD:
            self._tally.add(dead=1)
        log.log(logging.WARNING if outcome is Outcome.DEAD else logging.INFO,
                "queue %s: job %s failed on attempt %d (%s: %s) -> %s", self.queue.name,
                job.id, job.attempt, type(exc).__name__, exc, outcome)

    def _sleep_until_woken(self, next_event_ms: int | None) -> None:
        """Block on the wake list until an enqueue (or retry) pushes a marker, the next delayed
        job or lease deadline is due, or ``idle_wait`` passes (to notice a stop request)."""
        timeout = self.idle_wait
        if next_event_ms is not None:
            timeout = min(timeout, (next_event_ms - self.queue.settings.now_ms()) / 1000.0)
        try:
            self.queue.client.blpop(self.queue._wake_keys(), max(timeout, 0.01))
        except _TRANSIENT as exc:
            log.warning("queue %s: waiting for jobs failed (%s)", self.queue.name, exc)
            self.stop.wait(0.5)

    # -- the heartbeat thread ------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.queue.visibility_timeout / 3
        while not self._finished.wait(interval):
            self._renew(self._held.due(interval))

    def _renew(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            self._retrying(lambda: self.queue.extend(jobs), 0)
        except Exception:  # the heartbeat thread must outlive any error: leases would lapse
            log.exception("queue %s: heartbeat failed", self.queue.name)

    def _retrying(self, operation: Callable[[], T], default: T) -> T:
        """Run a settling call, riding out a Redis outage or restart with capped backoff for
        up to one visibility timeout (past that the lease has probably been reclaimed). A job
        whose ack is given up on is redelivered after its lease: at-least-once, never lost."""
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
        log.error("queue %s: giving up on a settling call; its jobs will be redelivered",
                  self.queue.name)
        return default


def _longest_block(client: object) -> float:
    """How long a blocking call may wait on this client: below its socket timeout (redis-py 8
    defaults it to 5 s), or the BLPOP would outlive the socket and fail instead of waking."""
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    timeout = get_kwargs().get("socket_timeout") if get_kwargs else None
    return 0.8 * timeout if timeout else float("inf")


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
