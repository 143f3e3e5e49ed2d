"""``BaseQueue``: the synchronous API of one queue. Each method asks the core for a script call,
runs it, and returns the parsed reply; the state machine itself lives in ``lua/``."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pyqcore.backoff import Backoff
from pyqcore.codes import Outcome
from pyqcore.core import (
    Call,
    QueueCalls,
    Reservation,
    Settled,
    lock_call,
    text,
    unlock_call,
)
from pyqcore.errors import ConfigurationError, LockNotAcquiredError
from pyqcore.health import warn_if_evicting
from pyqcore.job import ErrorInfo, Job
from pyqcore.keys import DEFAULT_PREFIX, QueueKeys
from pyqcore.runner import Client, Runner
from pyqcore.serializer import MSGPACK, Serializer
from pyqcore.settings import Clock, QueueSettings
from pyqcore.worker import DEFAULT_PREFETCH, Worker, WorkerReport

log = logging.getLogger("pyqcore")

Handler = Callable[[Job], object]


def _jobs(jobs: Job | Iterable[Job]) -> list[Job]:
    return [jobs] if isinstance(jobs, Job) else list(jobs)


class BaseQueue:
    """A named queue. Subclass it (set ``name``, override ``process_job``) or pass ``name=`` and
    ``handler=``. Class attributes are the defaults; constructor arguments override them."""

    name: str = ""
    max_retries: int = 3  # retries after the first delivery: at most max_retries + 1 deliveries
    visibility_timeout: float = 30.0  # seconds a delivery is leased before it is reclaimed
    backoff: Backoff = Backoff.exponential()
    serializer: Serializer = MSGPACK
    max_payload_bytes: int = 512 * 1024  # largest encoded job record accepted by add
    batch_size: int = 1000  # most jobs per enqueue script call

    def __init__(
        self,
        client: Client,
        *,
        name: str | None = None,
        handler: Handler | None = None,
        max_retries: int | None = None,
        visibility_timeout: float | None = None,
        backoff: Backoff | None = None,
        serializer: Serializer | None = None,
        max_payload_bytes: int | None = None,
        batch_size: int | None = None,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = QueueSettings(
            name=self.name if name is None else name,
            max_retries=self.max_retries if max_retries is None else max_retries,
            visibility_timeout=(
                self.visibility_timeout if visibility_timeout is None else visibility_timeout
            ),
            backoff=self.backoff if backoff is None else backoff,
            serializer=self.serializer if serializer is None else serializer,
            max_payload_bytes=(
                self.max_payload_bytes if max_payload_bytes is None else max_payload_bytes
            ),
            batch_size=self.batch_size if batch_size is None else batch_size,
            prefix=prefix,
            clock=clock,
            rng=rng or random.Random(),
        )
        s = self.settings
        self.name, self.max_retries, self.backoff = s.name, s.max_retries, s.backoff
        self.visibility_timeout, self.serializer = s.visibility_timeout, s.serializer
        self.max_payload_bytes, self.batch_size = s.max_payload_bytes, s.batch_size
        self.keys = QueueKeys(s.prefix, s.name)
        self.client = client
        self._handler = handler
        self._calls = QueueCalls(s)
        self._runner = Runner(client)
        warn_if_evicting(client)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- producing -----------------------------------------------------------------------------

    def add(
        self, payload: Any, *, context: Any = None, delay: float = 0.0, job_id: str | None = None
    ) -> str:
        """Add one job; returns its id. With ``job_id`` the add is idempotent: if a job with
        that id exists, nothing changes. ``delay`` (seconds) schedules it for later."""
        (call,) = self._calls.add([payload], [context], delay, [job_id])
        return self._runner.run(call)[0]

    def add_batch(
        self,
        payloads: Iterable[Any],
        *,
        context: Any = None,
        delay: float = 0.0,
        job_ids: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Add many jobs with one script call per ``batch_size`` jobs, all sent in one round
        trip; returns their ids in order. Every payload is encoded before anything is written,
        so one unserializable payload writes nothing. Each call of the round trip is atomic."""
        payloads = list(payloads)
        ids: Sequence[str | None] = [None] * len(payloads) if job_ids is None else job_ids
        if len(ids) != len(payloads):
            raise ConfigurationError(f"{len(ids)} job_ids for {len(payloads)} payloads")
        calls = self._calls.add(payloads, [context] * len(payloads), delay, ids)
        return [job_id for chunk in self._runner.run_all(calls) for job_id in chunk]

    # -- consuming -----------------------------------------------------------------------------

    def reserve(self, count: int = 1, *, visibility_timeout: float | None = None) -> list[Job]:
        """Lease up to ``count`` ready jobs. Records that cannot be decoded go straight to the
        dead-letter queue with the reason and are not returned."""
        return self._reserve(count, visibility_timeout).jobs

    def _reserve(self, count: int, visibility_timeout: float | None = None) -> Reservation:
        return self._bury_undecodable(
            self._runner.run(self._calls.lease(count, visibility_timeout)))

    def _ack_and_reserve(
        self, done: list[Job], count: int
    ) -> tuple[Settled | None, Reservation | None]:
        """Ack ``done`` and lease up to ``count`` more jobs in one round trip (the worker's
        hot path); returns the ack's reply unless done is empty, and the reservation unless
        count is 0."""
        calls: list[Call[Any]] = []
        if done:
            calls.append(self._calls.ack([(j.id, j.token) for j in done]))
        if count:
            calls.append(self._calls.lease(count))
        results = self._runner.run_all(calls) if calls else []
        settled: Settled | None = results[0] if done else None
        return settled, self._bury_undecodable(results[-1]) if count else None

    def _bury_undecodable(self, reservation: Reservation) -> Reservation:
        """Send leased jobs whose record cannot be decoded to the DLQ, with the reason."""
        for job_id, token, exc in reservation.undecodable:
            log.error("queue %s: job %s has a corrupt record, moved to the DLQ: %s",
                      self.name, job_id, exc)
            self._runner.run(self._calls.bury(job_id, token, ErrorInfo.from_exception(exc)))
        return reservation

    def ack(self, jobs: Job | Iterable[Job]) -> int:
        """Finish jobs; returns how many were acked (a job whose lease was lost counts 0)."""
        held = _jobs(jobs)
        if not held:
            return 0
        return self._runner.run(self._calls.ack([(j.id, j.token) for j in held])).count

    def fail(
        self, job: Job, error: BaseException | ErrorInfo, *, retry: bool = True
    ) -> Outcome:
        """Record a failed delivery: retry after the backoff while attempts remain (and
        ``retry``), else move the job to the dead-letter queue. Raises LeaseLostError if the
        lease is stale."""
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        return self._runner.run(self._calls.failure(job, info, retry)).outcome

    def extend(self, jobs: Job | Iterable[Job], seconds: float | None = None) -> int:
        """Heartbeat: lease held jobs for ``seconds`` more from now (default: the visibility
        timeout). Updates their ``lease_deadline``; returns how many were still held."""
        held = _jobs(jobs)
        if not held:
            return 0
        reply = self._runner.run(self._calls.heartbeat(held, seconds))
        deadline = (self.settings.now_ms() + (
            self.settings.visibility_ms if seconds is None else round(seconds * 1000)
        )) / 1000.0
        lost = set(reply.refused)
        for job in held:
            if job.id not in lost:
                job.lease_deadline = deadline
        return reply.count

    def release(self, jobs: Job | Iterable[Job]) -> int:
        """Give back leased jobs unstarted: front of ready, the delivery not counted."""
        held = _jobs(jobs)
        if not held:
            return 0
        return self._runner.run(self._calls.release([(j.id, j.token) for j in held])).count

    def process_job(self, job: Job) -> None:
        """Handle one job; override this (or pass ``handler=``). Raising fails the delivery;
        raise ``NonRetryableError`` to send the job straight to the dead-letter queue."""
        if self._handler is None:
            raise ConfigurationError(f"queue {self.name!r} has no handler: override process_job "
                                     "or register it with handler=")
        self._handler(job)

    def process(
        self,
        concurrency: int = 1,
        *,
        max_jobs: int | None = None,
        burst: bool = False,
        idle_wait: float = 1.0,
        prefetch: int = DEFAULT_PREFETCH,
        install_signal_handlers: bool = True,
    ) -> WorkerReport:
        """Run the worker loop until SIGTERM/SIGINT, ``max_jobs`` deliveries, or (``burst``)
        until nothing is ready. In-flight jobs finish; unstarted ones go back to ready.
        ``concurrency`` threads each lease batches sized to about 0.1 s of work, at most
        ``prefetch`` jobs (use 1 for long jobs that must not wait behind each other)."""
        worker = Worker(self, concurrency=concurrency, max_jobs=max_jobs, burst=burst,
                        idle_wait=idle_wait, prefetch=prefetch)
        return worker.run(install_signal_handlers=install_signal_handlers)

    # -- inspecting ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Jobs per state: ready, delayed, leased, dead (one consistent read)."""
        return self._runner.run(self._calls.counts())

    def stats(self) -> dict[str, int]:
        """The queue's counters: added, completed, retried, dead, redriven, purged, ..."""
        raw = self.client.hgetall(self.keys.key("stats"))
        return {text(k): int(v) for k, v in raw.items()}

    @contextmanager
    def lock(self, item: str, ttl: float = 30.0, wait: float = 10.0) -> Iterator[str]:
        """Hold the item lock ``item`` (at most ``ttl`` seconds; waits up to ``wait`` to get
        it), released on exit only if still ours. Yields the lock's token."""
        key, token = self.keys.lock(item), uuid.uuid4().hex
        ttl_ms = max(1, round(ttl * 1000))
        give_up = time.monotonic() + wait
        while (remaining := self._runner.run(lock_call(key, token, ttl_ms))) is not None:
            if time.monotonic() >= give_up:
                raise LockNotAcquiredError(f"lock {item!r} is held by another holder "
                                           f"for {remaining} ms more")
            time.sleep(min(0.05, max(remaining, 1) / 1000))
        try:
            yield token
        finally:
            self._runner.run(unlock_call(key, token))
