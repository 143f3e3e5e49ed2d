"""The worker, without I/O: the slot loop and the heartbeat loop as flows
(``pyqcore.core.effects``), and the decisions, counters, budget and held leases that the slots
of one worker share. The sync worker (threads) and the asyncio worker (tasks) drive these same
flows and differ only in how they perform the effects.

A slot is one loop: one round trip acks the jobs it finished and leases its next batch; it runs
the batch; round again. The batch size adapts to how long jobs take: about ``BATCH_SECONDS`` of
work per batch, from 1 up to ``prefetch`` jobs, so fast jobs share a round trip and slow jobs
are leased one at a time (none waits behind another). When nothing is ready a slot blocks on
the queue's wake list (an add, a retry or the next due time wakes it), so an idle worker does
not poll. A heartbeat extends the lease of every job held longer than a third of the
visibility timeout.

A stop request (SIGTERM/SIGINT, ``max_jobs`` reached, or in ``burst`` mode nothing ready) lets
each slot finish the job it is running, ack, and release the rest of its batch back to the
front of ready without counting the delivery. Redis errors are ridden out with capped backoff;
a job whose ack is lost is redelivered after its lease (at-least-once, never lost). Bounded:
once calls have failed for ``give_up_after`` seconds (30 s in burst mode, never otherwise),
the worker gives up and its ``run`` raises (``RedisUnavailableError`` for an unreachable
Redis); a stopping slot gives up its unsent acks once Redis has failed for a visibility
timeout, so a stop request ends the worker during an outage too.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Literal, NamedTuple, TypedDict, TypeVar

from pyqcore.checks import check_seconds
from pyqcore.codes import Outcome, Throttle
from pyqcore.core.calls import Call, Reservation, Settled
from pyqcore.core.effects import Alarm, Batch, Block, Flag, Flow, Pause, flow_of
from pyqcore.core.failures import TRANSIENT, Outage, typed
from pyqcore.core.hooks import RunObserver
from pyqcore.core.queue import QueueCore
from pyqcore.errors import ConfigurationError, JobTimeoutError, LeaseLostError
from pyqcore.job import Job, run_timeout
from pyqcore.settings import MAX_BATCH

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from pyqcore.worker_metrics import WorkerMetrics

log = logging.getLogger("pyqcore")

BATCH_SECONDS = 0.1  # work per leased batch that the adaptive batch size aims at
DEFAULT_PREFETCH = 100  # most jobs one slot leases at once, unless process(prefetch=...)
BURST_GIVE_UP_AFTER = 30.0  # seconds of failing round trips a burst worker rides out


@dataclass
class WorkerReport:
    """What one ``process`` run did with the deliveries it took."""

    delivered: int = 0  # jobs leased, corrupt records included
    acked: int = 0
    retried: int = 0
    dead: int = 0  # failed for good, or corrupt: moved to the dead-letter queue
    released: int = 0  # leased but never started (shutdown): back to ready, uncounted
    lease_lost: int = 0  # finished after the lease was lost: the ack/fail was refused
    timed_out: int = 0  # ran past their timeout: failed by the worker (in retried or dead too)


class Tally:
    """A WorkerReport that several slots add to."""

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


class Budget:
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


class Run:
    """A handler run with a timeout: its jobs, and when it must end (``Held``'s clock)."""

    __slots__ = ("deadline", "jobs", "timeout")

    def __init__(self, jobs: list[Job], timeout: float, deadline: float) -> None:
        self.jobs = jobs
        self.timeout = timeout
        self.deadline = deadline


class Held:
    """Jobs leased by any slot and not yet settled, with when their lease was last renewed
    (on ``clock``, monotonic seconds); and the runs with a timeout in progress, which the
    heartbeat watches."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs: dict[tuple[str, str], tuple[Job, float]] = {}
        self._leased_at: dict[tuple[str, str], float] = {}  # in lease order: the registry's
        self._runs: dict[int, Run] = {}  # by id(): timed runs in progress
        self._wake_at = math.inf  # when the heartbeat plans to wake next
        self._lock = threading.Lock()
        self._clock = clock
        self.clock = clock

    def start_run(self, jobs: list[Job], timeout: float, alarm: Alarm) -> Run:
        """A run of ``jobs`` begins that may take ``timeout`` seconds; sets ``alarm`` if it
        ends before the heartbeat planned to wake."""
        run = Run(jobs, timeout, self._clock() + timeout)
        with self._lock:
            self._runs[id(run)] = run
            sooner = run.deadline < self._wake_at
        if sooner:
            alarm.set()
        return run

    def end_run(self, run: Run) -> bool:
        """The slot's run returned: True if the slot settles its jobs, False if the heartbeat
        timed the run out first (it failed them)."""
        with self._lock:
            return self._runs.pop(id(run), None) is not None

    def overdue(self) -> list[Run]:
        """The runs past their deadline, taken from the slots: the heartbeat fails them."""
        now = self._clock()
        with self._lock:
            late = [run for run in self._runs.values() if run.deadline <= now]
            for run in late:
                del self._runs[id(run)]
        return late

    def wait_until(self, beat: float) -> float:
        """Seconds from now until ``beat`` or the earliest run's deadline, whichever is first
        (the heartbeat's next wake)."""
        with self._lock:
            self._wake_at = min([beat, *(run.deadline for run in self._runs.values())])
        return max(0.0, self._wake_at - self._clock())

    def add(self, jobs: list[Job]) -> None:
        now = self._clock()
        with self._lock:
            for job in jobs:
                self._jobs[job.id, job.token] = (job, now)
                self._leased_at[job.id, job.token] = now

    def remove(self, jobs: list[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._jobs.pop((job.id, job.token), None)
                self._leased_at.pop((job.id, job.token), None)

    def oldest(self, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` held jobs, the longest held first: (id, seconds held). A dict keeps
        insertion order, and a lease is inserted once, when taken: no sort needed."""
        now = self._clock()
        with self._lock:
            first = list(itertools.islice(self._leased_at.items(), limit))
        return [(job_id, now - at) for (job_id, _), at in first]

    def __len__(self) -> int:
        return len(self._jobs)

    def due(self, age: float) -> list[Job]:
        """Jobs whose lease was renewed ``age`` seconds ago or more; marks them renewed now."""
        now = self._clock()
        with self._lock:
            old = [job for job, since in self._jobs.values() if now - since >= age]
            for job in old:
                self._jobs[job.id, job.token] = (job, now)
        return old


class WorkerOptions(TypedDict, total=False):
    """How a worker runs, beside its concurrency (``process(...)``, ``Worker(...)``)."""

    max_jobs: int | None  # stop after this many deliveries
    burst: bool  # stop when nothing is ready
    idle_wait: float  # longest single wait for work, in seconds (to notice a stop request)
    prefetch: int  # most jobs one slot leases at once
    metrics: bool | WorkerMetrics  # record run time, wait and outcomes (pyqcore[metrics])
    metrics_port: int | None  # ... and serve them on this port while running
    metrics_host: str  # the address that listens (127.0.0.1 by default)
    schedules: bool  # also enqueue the due runs of the queue's schedules (a scheduler loop)
    # seconds of failing round trips (an outage) before the worker raises: by default 30 s in
    # burst mode (BURST_GIVE_UP_AFTER), never otherwise (None)
    give_up_after: float | None


def check_options(concurrency: int, prefetch: int, max_jobs: int | None,
                  idle_wait: float, give_up_after: float | None = None) -> None:
    """Refuse worker options that cannot work, with a ConfigurationError naming them."""
    for name, value, high in (("concurrency", concurrency, 10_000),
                              ("prefetch", prefetch, MAX_BATCH)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ConfigurationError(f"{name} must be an int from 1 to {high}, got {value!r}")
    if max_jobs is not None and (isinstance(max_jobs, bool) or not isinstance(max_jobs, int)
                                 or max_jobs < 0):
        raise ConfigurationError(f"max_jobs must be an int >= 0 or None, got {max_jobs!r}")
    check_seconds("idle_wait", idle_wait, high=24 * 3600.0)
    if give_up_after is not None:
        check_seconds("give_up_after", give_up_after, high=365 * 24 * 3600.0)


@dataclass
class Crew:
    """What the slots of one worker share. ``stop`` asks the slots to stop; ``finished`` is
    set once every slot has (the heartbeat runs until then). ``outage`` times the current run
    of failing calls; past ``give_up_after`` the worker gives up: ``failure`` holds the error
    its ``run`` raises once every slot has stopped."""

    queue_name: str
    stop: Flag
    finished: Flag
    burst: bool
    prefetch: int
    budget: Budget
    idle_wait: float  # longest single wait on the wake list
    visibility_timeout: float
    batches: bool  # the queue handles whole batches (process_jobs)
    tally: Tally = field(default_factory=Tally)
    held: Held = field(default_factory=Held)
    hooks: RunObserver | None = None  # metrics and tracing around each run (pyqcore.core.hooks)
    # Wakes the heartbeat: a run whose timeout ends sooner than it planned, or the end
    alarm: Alarm = field(default_factory=threading.Event)

    def timed(self, jobs: list[Job], timeout: float | None) -> Run | None:
        """The run of ``jobs`` about to start, when it has a timeout (None otherwise)."""
        return None if timeout is None else self.held.start_run(jobs, timeout, self.alarm)

    def untimed(self, run: Run | None) -> bool:
        """After a run: True if the slot settles its jobs (the run had no timeout, or ended
        in time), False if the heartbeat timed it out and failed them already."""
        if run is None or self.held.end_run(run):
            return True
        log.warning("queue %s: a handler returned after its timeout of %g s had failed its "
                    "job(s) %s: its outcome is dropped", self.queue_name, run.timeout,
                    ", ".join(job.id for job in run.jobs[:10]))
        return False
    give_up_after: float | None = None
    outage: Outage = field(default_factory=Outage)
    failure: BaseException | None = None

    @classmethod
    def of(cls, core: QueueCore, *, batches: bool, stop: Flag, finished: Flag, alarm: Alarm,
           longest_block: float, concurrency: int, hooks: RunObserver | None = None,
           **options: Unpack[WorkerOptions]) -> Crew:
        """The crew of a worker with these options (ConfigurationError for ones that cannot
        work). ``longest_block`` is the longest wait the client's socket timeout allows."""
        prefetch = options.get("prefetch", DEFAULT_PREFETCH)
        max_jobs = options.get("max_jobs")
        idle_wait = options.get("idle_wait", 1.0)
        burst = options.get("burst", False)
        give_up_after = options.get("give_up_after", BURST_GIVE_UP_AFTER if burst else None)
        check_options(concurrency, prefetch, max_jobs, idle_wait, give_up_after)
        return cls(core.name, stop, finished, burst, prefetch, Budget(max_jobs),
                   min(idle_wait, longest_block), core.settings.visibility_timeout, batches,
                   hooks=hooks, give_up_after=give_up_after, alarm=alarm)

    def stopping(self) -> bool:
        """Whether the slots should stop: asked to, or the worker gave up."""
        return self.failure is not None or self.stop.is_set()

    def gives_up(self, exc: Exception, outage: float) -> bool:
        """After ``exc``, with Redis failing for ``outage`` seconds: whether the worker gives
        up (now or already). The first slot past ``give_up_after`` records the error to raise:
        a Redis error as its pyqcore error (``typed``), any other as it is."""
        if self.failure is None and self.give_up_after is not None \
                and outage >= self.give_up_after:
            error = typed(exc) or exc
            if error is not exc:
                error.__cause__ = exc
            log.error("queue %s: Redis has failed for %.1f s (give_up_after=%g): giving up; "
                      "held jobs are redelivered after their lease", self.queue_name, outage,
                      self.give_up_after)
            self.failure = error
        return self.failure is not None

    def raise_failure(self) -> None:
        """Raise the error the worker gave up on, if it did (``WorkerBase.outcome``)."""
        if self.failure is not None:
            raise self.failure

    def record_failure(self, job: Job, exc: BaseException, outcome: Outcome | None) -> None:
        """Count and log a failed delivery once ``fail`` answered (None: it could not)."""
        if outcome is Outcome.RETRY:
            self.tally.add(retried=1)
        elif outcome is Outcome.DEAD:
            self.tally.add(dead=1)
        else:
            return
        log.log(logging.WARNING if outcome is Outcome.DEAD else logging.INFO,
                "queue %s: job %s failed on attempt %d (%s: %s) -> %s", self.queue_name,
                job.id, job.attempt, type(exc).__name__, exc, outcome)


def split_batch(
    queue_name: str, jobs: list[Job], failed: dict[str, BaseException]
) -> tuple[list[Job], list[tuple[Job, Exception]]]:
    """A batch handler's outcome: the jobs to ack, and the failed ones with their exception."""
    done: list[Job] = []
    failures: list[tuple[Job, Exception]] = []
    for job in jobs:
        error = failed.pop(job.id, None)
        if error is None:
            done.append(job)
        else:
            failures.append((job, error if isinstance(error, Exception) else RuntimeError(error)))
    if failed:
        log.warning("queue %s: process_jobs reported ids not in its batch: %s", queue_name,
                    sorted(failed)[:10])
    return done, failures



class Step(NamedTuple):
    """What a slot does after a round trip."""

    action: Literal["stop", "again", "sleep", "wait", "run"]
    jobs: list[Job]
    wait_ms: int | None = None  # for "sleep": ms until something becomes ready anyway; for
    # "wait": ms until the rate limit lets a job start (nothing an add does can start one sooner)


class SlotPlan:
    """One slot's state between round trips: the jobs to ack, the next batch size, and the
    run of failed round trips."""

    def __init__(self, crew: Crew) -> None:
        self.crew = crew
        self.done: list[Job] = []
        self.wanted = 0
        self._size = 1
        self._failures = 0

    def claim(self) -> bool:
        """Claim this round's deliveries (none once stopping); False when the slot is
        finished: nothing to lease and nothing to ack."""
        crew = self.crew
        self.wanted = 0 if crew.stopping() else crew.budget.claim(self._size)
        return bool(self.wanted or self.done)

    def round_failed(self, exc: Exception) -> float | None:
        """The round trip raised; returns the seconds to wait before the next one, or None
        when the slot gives up: the worker gave up (see ``Crew.gives_up``), or it is stopping
        and Redis has failed for a visibility timeout (its unacked jobs are redelivered)."""
        crew = self.crew
        crew.budget.give_back(self.wanted)
        self._failures += 1
        outage = crew.outage.failed()
        if isinstance(exc, TRANSIENT):  # keep the acks: sent again on reconnect
            log.warning("queue %s: %s; retrying", crew.queue_name, exc)
        else:  # e.g. a clobbered key: these jobs are redelivered after their lease
            log.exception("queue %s: acking or reserving failed", crew.queue_name)
            crew.held.remove(self.done)
            self.done = []
        if crew.gives_up(exc, outage) or (crew.stopping()
                                          and outage >= crew.visibility_timeout):
            crew.held.remove(self.done)
            self.done = []
            return None
        return backoff(self._failures, cap=2.0)

    def round_done(self, settled: Settled | None, reservation: Reservation | None) -> Step:
        """Book the round trip's ack and lease; say what the slot does next."""
        crew = self.crew
        self._failures = 0
        crew.outage.ended()
        if settled is not None:
            crew.held.remove(self.done)
            crew.tally.add(acked=settled.count, lease_lost=len(self.done) - settled.count)
        self.done = []
        if reservation is None:
            return Step("stop", [])
        jobs, buried = reservation.jobs, len(reservation.undecodable)
        crew.budget.give_back(self.wanted - len(jobs) - buried)
        crew.tally.add(delivered=len(jobs) + buried, dead=buried)
        if jobs:
            crew.held.add(jobs)
            return Step("run", jobs)
        if buried:
            return Step("again", [])
        if reservation.rate_limited:
            return Step("wait", [], reservation.wait_ms)
        if crew.burst and reservation.throttle in (Throttle.NONE, Throttle.PAUSED):
            return Step("stop", [])  # nothing ready (a limit would let something start later)
        return Step("sleep", [], reservation.wait_ms)

    def batch_ran(self, done: list[Job], ran: int, elapsed: float) -> None:
        """Keep the jobs to ack; size the next batch to about BATCH_SECONDS of work (at most
        doubling, at least one job, at most ``prefetch``)."""
        self.done = done
        if ran:
            ideal = int(BATCH_SECONDS * ran / max(elapsed, 1e-9))
            self._size = max(1, min(ideal, 2 * self._size, self.crew.prefetch))


class Retrying:
    """The schedule of a settling call (ack, fail, release, extend) ridden through a Redis
    outage: capped backoff, at least three tries, until Redis has failed for a visibility
    timeout (past which the lease has probably been reclaimed) or the worker gives up. A job
    whose ack is given up on is redelivered: at-least-once, never lost."""

    def __init__(self, crew: Crew) -> None:
        self.crew = crew
        self._attempt = 0

    def delay(self, exc: Exception) -> float | None:
        """Seconds to wait before trying again after ``exc``, or None to give up."""
        crew = self.crew
        self._attempt += 1
        outage = crew.outage.failed()
        if crew.gives_up(exc, outage) or (self._attempt >= 3
                                          and outage >= crew.visibility_timeout):
            log.error("queue %s: giving up on a settling call; its jobs will be redelivered",
                      crew.queue_name)
            return None
        log.warning("queue %s: %s; retrying", crew.queue_name, exc)
        return backoff(self._attempt, cap=1.0)


def backoff(failures: int, *, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive transient errors: 0.1, 0.2, 0.4, ...
    up to ``cap`` (the exponent is bounded, so a long outage never overflows a float)."""
    return min(0.05 * (1 << min(failures, 16)), cap)


def sleep_timeout(idle_wait: float, wait_ms: int | None) -> float:
    """How long an idle slot blocks on the wake list: until the next due time or lease
    deadline (``wait_ms`` from now, by the server's clock: the worker's own plays no part),
    at most ``idle_wait`` (to notice a stop request), at least 10 ms."""
    timeout = idle_wait
    if wait_ms is not None:
        timeout = min(timeout, wait_ms / 1000.0)
    return max(timeout, 0.01)


# -- the flows -----------------------------------------------------------------------------------

T = TypeVar("T")


def slot_loop(core: QueueCore, crew: Crew) -> Flow[None]:
    """One slot: ack what was done and lease the next batch in one round trip; run it; repeat
    until stopped (or, in burst mode, until nothing is ready)."""
    plan = SlotPlan(crew)
    while plan.claim():
        try:
            settled, reservation = yield from core.ack_and_reserve(plan.done, plan.wanted)
        except Exception as exc:
            delay = plan.round_failed(exc)
            if delay is None:
                return
            yield Pause(delay, None if crew.stopping() else crew.stop)
            continue
        step = plan.round_done(settled, reservation)
        if step.action == "stop":
            return
        if step.action == "sleep":
            yield from _wait_for_work(core, crew, step.wait_ms)
        elif step.action == "wait":  # rate-limited: exactly until the next start is allowed
            yield Pause(max(step.wait_ms or 0, 1) / 1000.0, crew.stop)
        elif step.action == "run":
            started = time.monotonic()
            run = _run_whole_batch if crew.batches else _run_one_by_one
            done, ran = yield from run(core, crew, step.jobs)
            plan.batch_ran(done, ran, time.monotonic() - started)


def _run_one_by_one(core: QueueCore, crew: Crew, jobs: list[Job]) -> Flow[tuple[list[Job], int]]:
    """Run a leased batch a job at a time; returns the jobs to ack and how many ran. On a stop
    request the jobs not started yet are released."""
    done: list[Job] = []
    hooks = crew.hooks
    for i, job in enumerate(jobs):
        if crew.stopping():
            yield from _release(core, crew, jobs[i:])
            return done, i
        run = None if job.timeout is None else crew.timed([job], job.timeout)
        if hooks is None:  # all that metrics and tracing cost when they are off
            error = yield job  # the driver runs the handler; None, or what it raised
        else:
            handle = hooks.start((job,))
            error = yield job
            hooks.end(handle, (job,), {} if error is None else {job.id: error})
        if run is not None and not crew.untimed(run):
            continue  # timed out: the heartbeat failed it
        if error is None:
            done.append(job)
        else:
            yield from _fail(core, crew, job, error)
    return done, len(jobs)


def _run_whole_batch(core: QueueCore, crew: Crew, jobs: list[Job]
                     ) -> Flow[tuple[list[Job], int]]:
    """``process_jobs`` over the batch in one call: the jobs it reports are failed with their
    exception, every job if it raises, and the others are acked."""
    if crew.stopping():
        yield from _release(core, crew, jobs)
        return [], 0
    hooks = crew.hooks
    handle = None if hooks is None else hooks.start(jobs)
    run = crew.timed(jobs, run_timeout(jobs))
    outcome = yield Batch(jobs)
    if not crew.untimed(run):  # timed out: the heartbeat failed them
        outcome = timeout_error(run.timeout) if run is not None else outcome
        settled = False
    else:
        settled = True
    failed: dict[str, BaseException] = (
        dict.fromkeys((job.id for job in jobs), outcome) if isinstance(outcome, BaseException)
        else dict(outcome or {}))
    if hooks is not None:
        hooks.end(handle, jobs, failed)
    if not settled:
        return [], len(jobs)
    done, failures = split_batch(crew.queue_name, jobs, failed)
    for job, error in failures:
        yield from _fail(core, crew, job, error)
    return done, len(jobs)


def _release(core: QueueCore, crew: Crew, jobs: list[Job]) -> Flow[None]:
    try:
        released = yield from _retrying(crew, lambda: core.release(jobs), 0)
        crew.tally.add(released=released)
    except Exception:  # they go back to ready anyway, when their lease expires
        log.exception("queue %s: releasing unstarted jobs failed", crew.queue_name)
    finally:
        crew.held.remove(jobs)


def _fail(core: QueueCore, crew: Crew, job: Job, exc: Exception) -> Flow[None]:
    if isinstance(exc, JobTimeoutError):  # by the heartbeat, or a cancelled coroutine
        crew.tally.add(timed_out=1)
    outcome = None
    try:  # QueueCore.fail buries a NonRetryableError at once, retries anything else
        outcome = yield from _retrying(crew, lambda: core.fail(job, exc), None)
    except LeaseLostError:
        crew.tally.add(lease_lost=1)
    except Exception:  # the delivery still counts: the job is redelivered after its lease
        log.exception("queue %s: recording the failure of job %s failed", crew.queue_name,
                      job.id)
    finally:
        crew.held.remove([job])
    crew.record_failure(job, exc, outcome)


def _wait_for_work(core: QueueCore, crew: Crew, wait_ms: int | None) -> Flow[None]:
    """Block on the wake list until an add (or retry) pushes a marker, the next delayed job or
    lease deadline is due, or ``idle_wait`` passes (to notice a stop request)."""
    timeout = sleep_timeout(crew.idle_wait, wait_ms)
    try:
        yield Block(core.wake_keys(), timeout)
    except TRANSIENT as exc:
        log.warning("queue %s: waiting for jobs failed (%s)", crew.queue_name, exc)
        yield Pause(0.5, crew.stop)


def heartbeat_loop(core: QueueCore, crew: Crew) -> Flow[None]:
    """Until every slot has finished: every third of the visibility timeout, extend the leases
    held that long (a failed heartbeat is logged; the next one tries again); and as each run
    with a timeout passes it, fail its jobs with JobTimeoutError (so their leases end: none is
    extended past its timeout). A slot sets ``crew.alarm`` when it starts a run that ends
    sooner than this loop planned to wake; the worker sets it once every slot has finished."""
    interval = core.settings.visibility_timeout / 3
    held = crew.held
    beat = held.clock() + interval
    while True:
        crew.alarm.clear()
        if crew.finished.is_set():
            return
        for run in held.overdue():
            yield from _time_out(core, crew, run)
        if held.clock() >= beat:
            jobs = held.due(interval)
            if jobs:
                yield from _renew(core, crew, jobs)
            beat = held.clock() + interval
        yield Pause(held.wait_until(beat), crew.alarm)


def _time_out(core: QueueCore, crew: Crew, run: Run) -> Flow[None]:
    """Fail the jobs of a run that passed its timeout: its handler is cancelled if it is a
    coroutine, else its thread goes on (and keeps its slot) until it returns."""
    for job in run.jobs:
        log.warning("queue %s: job %s ran past its timeout of %g s", crew.queue_name, job.id,
                    run.timeout)
        yield from _fail(core, crew, job, timeout_error(run.timeout))


def timeout_error(timeout: float) -> JobTimeoutError:
    """The error a run that passed its timeout fails with."""
    return JobTimeoutError(f"the handler ran past its timeout of {timeout:g} s")


def _renew(core: QueueCore, crew: Crew, jobs: list[Job]) -> Flow[None]:
    try:
        yield from _retrying(crew, lambda: core.extend(jobs), 0)
    except Exception:  # the heartbeat must outlive any error: leases would lapse
        log.exception("queue %s: heartbeat failed", crew.queue_name)


def _retrying(crew: Crew, operation: Callable[[], Flow[T] | Call[T]], default: T) -> Flow[T]:
    """Run a settling call, riding out a Redis outage or restart (see ``Retrying``)."""
    schedule = Retrying(crew)
    while True:
        try:
            result = yield from flow_of(operation())
        except TRANSIENT as exc:
            delay = schedule.delay(exc)
            if delay is None:
                return default
            yield Pause(delay)
        else:
            crew.outage.ended()
            return result
