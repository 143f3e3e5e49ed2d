"""One builder per Lua script: which script a call runs, with which KEYS and ARGV, and how its
reply is read. Nothing here talks to Redis.

A ``Call`` is one script invocation: a driver sends ``EVALSHA call.script.sha`` with
``call.keys`` and ``call.args``, then hands the reply to ``call.parse``. Operations of several
calls are flows (``pyqcore.core.effects``) built on these.

No call carries the time: the scripts read the Redis server's clock. Only a queue built with a
test's ``ManualClock`` sends it, as the first ARGV entry of the scripts' test-only variant.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

from redis.exceptions import OutOfMemoryError

from pyqcore.checks import MAX_DELAY, check_seconds
from pyqcore.codes import Code, Outcome, Throttle
from pyqcore.errors import (
    ConfigurationError,
    DeserializationError,
    LeaseLostError,
    QueueFullError,
    ScriptError,
)
from pyqcore.job import ErrorInfo, Job, decode_record, encode_record, encode_records
from pyqcore.keys import QueueKeys
from pyqcore.limits import UNRANKED, Rank
from pyqcore.schedule import Schedule
from pyqcore.scripts import Script, load_scripts
from pyqcore.settings import (
    MAX_BATCH,
    MAX_RETRIES_LIMIT,
    MAX_VISIBILITY_TIMEOUT,
    QueueSettings,
)

T = TypeVar("T")
log = logging.getLogger("pyqcore")
Arg = str | bytes | int

SWEEP_LIMIT = 1000  # most delayed promotions and expired leases one reserve call handles
MAX_JOB_ID = 1024  # bytes
CANCEL_BATCH = 100  # most ids per cancel call (each scans the ready list: lua/cancel.lua)
# The scripts that write a terminal transition (completed, dead, cancelled), sent the events
# stream at level 1 too (store_results: queue.result() waits on them); the others that take
# it (enqueue, ack, redrive, purge) are sent it at level 2 only (events=True).
TERMINAL_WRITERS = frozenset({"reserve", "fail", "complete", "cancel", "clear", "release"})
# The kept keys' parts (lua/includes/keep_trim.lua): optional in the scripts that keep the jobs
# they cancel (cancel, clear), sent only by a queue that keeps finished jobs.
KEPT_PARTS = frozenset({"completed", "kept", "results"})


def _ms(seconds: float) -> int:
    """A lease length in ms, from seconds in (0, MAX_VISIBILITY_TIMEOUT]."""
    return max(1, round(check_seconds("a lease length", seconds, high=MAX_VISIBILITY_TIMEOUT)
                        * 1000))


def lease_token() -> str:
    """A fresh lease token: random, so no two leases share one, even across a failover that
    rolled a primary's counters back (a stale worker's ack must never match a new lease)."""
    return secrets.token_hex(8)


def _delay_ms(delay: float) -> int:
    """The enqueue script's delay for one in seconds: 0 (ready now) or at least 1 ms."""
    delay = check_seconds("delay", delay, high=MAX_DELAY, zero=True)
    return max(1, round(delay * 1000)) if delay > 0 else 0


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def _at(at: object) -> str:
    """The enqueue script's ``due`` for ``at=``: "@" and the time in ms since the epoch (rounded
    up, so a job is never due early; a time before the epoch is simply past)."""
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ConfigurationError(f"at= must be a timezone-aware datetime (e.g. "
                                 f"datetime.now(timezone.utc)), got {at!r:.80}")
    return f"@{max(0, -((at - _EPOCH) // -_MS))}"


def shared_of(delay: float | None, at: datetime | None, max_retries: int | None) -> Shared:
    """What an add's jobs share in their enqueue call (see ``Shared``), checked: ``delay``
    (seconds from now, by the server's clock) or ``at`` (an aware datetime), not both, and the
    jobs' own ``max_retries``."""
    if delay is None and at is None and max_retries is None:  # a plain add, checked cheaply
        return PLAIN
    if at is None:
        due: Arg = 0 if delay is None else _delay_ms(delay)
    elif delay is not None:
        raise ConfigurationError("pass delay= or at=, not both")
    else:
        due = _at(at)
    if max_retries is None:
        return due, 0
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) \
            or not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise ConfigurationError(f"max_retries must be an int from 0 to {MAX_RETRIES_LIMIT} "
                                 f"or None, got {max_retries!r}")
    return due, max_retries + 1


def timeout_ms(timeout: float | None) -> int:
    """A job's own timeout for its record, in ms (0: none, the queue's applies)."""
    if timeout is None:
        return 0
    return max(1, round(check_seconds("timeout", timeout, high=MAX_VISIBILITY_TIMEOUT) * 1000))


def _job_id(job_id: str | None) -> str:
    """A custom id as given (non-empty str up to MAX_JOB_ID bytes), or "" to be numbered."""
    if job_id is None:
        return ""
    if not isinstance(job_id, str) or not job_id or len(job_id.encode()) > MAX_JOB_ID:
        raise ConfigurationError(
            f"job_id must be a non-empty str of at most {MAX_JOB_ID} bytes, got {job_id!r:.80}"
        )
    return job_id


def given_id(job_id: str) -> str:
    """The id of an existing job, as given (a non-empty str up to MAX_JOB_ID bytes)."""
    if job_id is None:
        raise ConfigurationError("job_id must be a non-empty str, got None")
    return _job_id(job_id)


class Call(Generic[T]):
    """One script invocation, ready to send, the parser of its reply, and optionally what an
    error reply becomes (``on_error``; without it the driver raises the error as it came).
    ``done``, if set, runs once the call's I/O is over, whatever its outcome: only on a call
    that is an operation by itself, never one a flow yields (a coalesced add frees its slot
    with it, ``pyqcore.core.coalesce``).
    (A slotted class: one is built per operation, and a frozen dataclass costs five times as
    much to build.)"""

    __slots__ = ("args", "done", "keys", "on_error", "parse", "script")

    def __init__(self, script: Script, keys: Sequence[str], args: Sequence[Arg],
                 parse: Callable[[Any], T],
                 on_error: Callable[[Exception], T] | None = None) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.parse = parse
        self.on_error = on_error
        self.done: Callable[[], None] | None = None

    def error_reply(self, error: Exception) -> T:
        """What Redis's error reply to this call becomes: ``on_error``'s value (or the typed
        error it raises), else the error itself, raised."""
        if self.on_error is None:
            raise error
        return self.on_error(error)

    def __repr__(self) -> str:
        return f"Call({self.script.name}, keys={list(self.keys)!r}, args={list(self.args)!r:.200})"


# What the jobs of one enqueue call share: (due, max_attempts), the script's ARGV 1 and 4: when
# they are due (0: ready now; ms from now by the server's clock; "@ms": at that time) and the
# deliveries they allow (0: the queue's). Only adds that share these share a call.
Shared = tuple[Arg, int]
PLAIN: Shared = (0, 0)  # ready now, the queue's max_retries: every plain add shares this one

# One job to add, checked and encoded: (partition, shared, record, job_id): the partition it
# goes to, see Shared, its record, and its custom id ("" to be numbered). A plain tuple: one is
# built per add.
NewJob = tuple[int, Shared, bytes, str]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` got: decoded jobs, records that failed to decode, and the next event."""

    jobs: list[Job]
    undecodable: list[tuple[str, str, DeserializationError]]  # (id, token, why)
    wait_ms: int | None  # with no job: ms from now to the next due time or lease deadline
    partition: int = 0  # the partition it leased from
    more_ready: bool = False  # no job, yet ids are ready: the call dropped only orphans
    throttle: Throttle = Throttle.NONE  # what held the lease back, if anything

    @property
    def rate_limited(self) -> bool:
        """Nothing may start before ``wait_ms`` (rate_limit), whatever is added meanwhile."""
        return self.throttle is Throttle.RATE


@dataclass(frozen=True, slots=True)
class Room:
    """What one partition had room for before an add of several script calls: the jobs
    waiting in it, and its server's memory (see lua/room.lua)."""

    waiting: int  # ready + delayed
    used_memory: int  # bytes; -1 if INFO is denied to this client
    maxmemory: int  # bytes, 0 = no limit; -1 if INFO is denied to this client
    server: str  # the server's run_id: partitions on one server share its memory


@dataclass(frozen=True, slots=True)
class Settled:
    """Reply of ack / release / extend: how many jobs the tokens held, and the ids refused
    (and for extend, the new lease deadline and the held jobs cancelled meanwhile, which it
    did not renew)."""

    count: int
    refused: list[str]
    deadline_ms: int = 0
    cancelled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """Reply of ``fail``: retried (at ``at_ms``) or dead (since ``at_ms``)."""

    outcome: Outcome
    at_ms: int


@dataclass(frozen=True, slots=True)
class Redriven:
    """Reply of ``redrive``: moved back to ready, kept back at their limit, not dead, examined."""

    redriven: int
    kept_back: int
    not_dead: int
    examined: int


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as ``job_info`` found it, still undecoded (``at_ms``: the due time, lease
    deadline or time it died, by state; -1 for a waiting job)."""

    state: str
    record: bytes
    meta: bytes | None
    error: bytes | None
    at_ms: int
    result: bytes | None = None  # a kept completed job's, with store_results


@dataclass(frozen=True, slots=True)
class ResultRow:
    """What ``result.lua`` read of one job: its state ("live", "dead", "completed",
    "cancelled", "none"), its error (dead) or result (completed), still undecoded, and the
    partition's last events entry id, from which a wait for the job's terminal event starts."""

    state: str
    value: bytes | None
    last_id: str


@dataclass(frozen=True, slots=True)
class DeadRow:
    """One dead job as ``peek_dead`` returns it, still undecoded."""

    job_id: str
    died_ms: int
    record: bytes | None
    meta: bytes | None
    error: bytes | None


@dataclass(frozen=True, slots=True)
class Stored:
    """A schedule as ``schedules.lua`` read it: its due time (-1: none) and definition."""

    name: str
    due_ms: int
    definition: bytes | None


def parse_stored(reply: Any) -> tuple[int, list[Stored]]:
    """``schedules.lua``'s reply: the server's now and the schedules."""
    reply = checked(reply)
    now = int(reply[1])
    return now, [Stored(text(reply[i]), int(reply[i + 1]), reply[i + 2] or None)
                 for i in range(2, len(reply), 3)]


def checked(reply: Any) -> list[Any]:
    """Raise the typed error for a non-OK reply; return the reply otherwise."""
    if not isinstance(reply, list) or not reply:
        raise ScriptError(f"unexpected script reply {reply!r}")
    code = reply[0]
    if code == Code.OK:
        return reply
    message = text(reply[1]) if len(reply) > 1 else ""
    if code == Code.LEASE_LOST:
        raise LeaseLostError(message)
    if code == Code.QUEUE_FULL:
        raise QueueFullError(f"queue full: {message}; nothing was added")
    raise ScriptError(f"{Code(code).name}: {message}")


OUT_OF_MEMORY = ("Redis is out of memory (used_memory > maxmemory, noeviction): it refused the "
                 "add, and nothing was added")


def out_of_memory(error: Exception) -> QueueFullError:
    """An enqueue call's error reply as QueueFullError when Redis refused it for memory (its
    first write is refused, so it wrote nothing); any other error, raised as it came."""
    if isinstance(error, OutOfMemoryError):
        return QueueFullError(OUT_OF_MEMORY)
    raise error


def refuse_out_of_memory(error: Exception) -> Any:
    """``out_of_memory``, raised: for an add of one script call."""
    raise out_of_memory(error) from error


def refusable(call: Call[list[str]]) -> Call[list[str] | QueueFullError]:
    """An enqueue call of a batch of several calls, whose refusal (max_ready, or Redis out of
    memory) is its value, not raised: the batch's flow then says which of its calls wrote."""

    def parse(reply: Any) -> list[str] | QueueFullError:
        try:
            return call.parse(reply)
        except QueueFullError as full:
            return full

    return Call(call.script, call.keys, call.args, parse, out_of_memory)


def text(value: bytes | str | int) -> str:
    """A reply element as str (redis-py hands out bytes or str depending on the command)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _numbered(reply: Any) -> str:
    """The ids an enqueue call gave its automatic ids, joined by ",": a plain add's reply is
    that id alone (a bulk string), any other call's is ``{0, autos, ...}``."""
    if isinstance(reply, bytes):
        return reply.decode()
    return text(checked(reply)[1])


def _one_numbered(reply: Any) -> str:
    """The id of the one job of an enqueue call without custom ids (a plain add's reply is
    that id alone: read without a call more, it is every add's path)."""
    return reply.decode() if type(reply) is bytes else _numbered(reply)


def _ids(values: Iterable[bytes | str]) -> list[str]:
    return [text(v) for v in values]


def _pairs(pairs: Iterable[tuple[str, str]]) -> list[Arg]:
    flat: list[Arg] = []
    for job_id, token in pairs:
        flat.append(job_id)
        flat.append(token)
    return flat


def _settled(reply: Any) -> Settled:
    reply = checked(reply)
    return Settled(reply[1], _ids(reply[2:]))


class QueueCalls:
    """Builds the script calls of one queue; shared by the sync and asyncio queues."""

    def __init__(self, settings: QueueSettings, partition: int | None = None) -> None:
        self.settings = settings
        self.queue = settings.name
        self.serializer = settings.serializer
        self.partition = partition or 0
        self.keys = QueueKeys(settings.prefix, settings.name, partition)
        self._id_prefix = "" if partition is None else f"{partition}-"
        self._clock = settings.clock  # a test's ManualClock, else None: the server's clock
        self._max_ready = settings.max_ready or 0  # 0: no limit, not sent
        self._scripts = load_scripts(manual_clock=self._clock is not None)
        self._keys = {name: self.keys.keys(s.key_parts) for name, s in self._scripts.items()}
        # The events ARGV of each script sent the stream at the queue's level (none: nothing
        # sent, so a queue without events sends what it always did).
        level = settings.events_level
        self._events: dict[str, tuple[int, int]] = {}
        for name, script in self._scripts.items():
            if not script.trailing:  # takes no events stream
                continue
            if level == 2 or (level == 1 and name in TERMINAL_WRITERS):
                self._events[name] = (level, settings.events_maxlen)
            else:
                self._keys[name] = self._keys[name][:-1]
        # The kept keys and bounds of the scripts that keep the jobs they cancel
        # (lua/includes/keep_cancelled.lua), on a queue that keeps finished jobs; a queue that
        # keeps none sends neither, so its calls are what they always were.
        self._kept: dict[str, tuple[int, int]] = {}
        for name, script in self._scripts.items():
            if not script.kept:
                continue
            if settings.keeps_completed:
                self._kept[name] = (round(settings.keep_completed * 1000),
                                    settings.keep_completed_count)
            else:
                # (strict=False: the events stream, last, may be dropped already)
                self._keys[name] = [key for part, key in zip(script.key_parts, self._keys[name],
                                                             strict=False)
                                    if part not in KEPT_PARTS]
        enqueue = self._keys["enqueue"]  # a plain add's keys: the required ones (then events)
        plain = enqueue[: self._scripts["enqueue"].required_keys]
        self._plain_enqueue_keys = [*plain, enqueue[-1]] if "enqueue" in self._events else plain
        # A plain add's call, built without ``_call`` (every add's path) unless a test's clock
        # or the events stream adds to its ARGV.
        self._plain_enqueue = (None if self._clock is not None or "enqueue" in self._events
                               else self._scripts["enqueue"])
        self._limits = settings.limits_of(self.partition)  # reserve's flow-control ARGV

    # -- operations in the caller's terms (seconds, payloads, exceptions) ----------------------

    def add(
        self, payloads: Sequence[Any], contexts: Sequence[Any], shared: Shared,
        job_ids: Sequence[str | None], *, timeout: int = 0, rank: Rank = UNRANKED,
    ) -> list[Call[list[str] | QueueFullError]]:
        """Encode every record first (a bad one raises before any write), then one call per
        ``batch_size`` jobs. Each call parses to the jobs' ids (an existing id for a duplicate),
        or to the QueueFullError of a call refused (it wrote nothing). ``timeout``: the jobs'
        own, in ms (0: none). A ``rank`` (priority, group) makes them ranked jobs."""
        s = self.settings
        records = encode_records(s.serializer, payloads, contexts, s.stamp_ms(),
                                 s.max_payload_bytes, timeout_ms=timeout)
        custom = any(i is not None for i in job_ids)
        ids = [_job_id(i) for i in job_ids] if custom else [""] * len(records)
        step = s.batch_size
        return [refusable(self.enqueue(ids[i : i + step], records[i : i + step], shared, rank))
                for i in range(0, len(records), step)]

    def add_one(self, payload: Any, context: Any, shared: Shared, job_id: str | None, *,
                timeout: int = 0) -> NewJob:
        """``add`` of a single job, checked and encoded, ready to be sent alone or with others
        (``enqueue_jobs``); ``timeout``: its own, in ms (0: none)."""
        s = self.settings
        return (self.partition, shared,
                encode_record(s.serializer, payload, context, s.stamp_ms(), s.max_payload_bytes,
                              timeout_ms=timeout),
                "" if job_id is None else _job_id(job_id))

    def redated(self, jobs: Sequence[NewJob]) -> list[NewJob]:
        """Jobs with their records dated now by ``stamp_ms`` (the queue's first adds, encoded
        before the server clock's offset was known)."""
        s, stamp = self.settings, self.settings.stamp_ms()
        redone: list[NewJob] = []
        for partition, shared, record, given in jobs:
            payload, context, _, timeout = decode_record(s.serializer, record)
            redone.append((partition, shared,
                           encode_record(s.serializer, payload, context, stamp,
                                         s.max_payload_bytes, timeout_ms=timeout), given))
        return redone

    def enqueue_one(self, job: NewJob) -> Call[str]:
        """One plain job's enqueue call (a lone add), built without the lists a batch needs:
        parses to its id."""
        _, (due, max_attempts), record, given = job
        keys = self._plain_enqueue_keys
        if not given and not self._max_ready:  # a plain add
            args: list[Arg] = [due, self._id_prefix, 1, max_attempts, record]
            if self._plain_enqueue is not None:
                return Call(self._plain_enqueue, keys, args, _one_numbered, refuse_out_of_memory)
            return self._call("enqueue", args, _one_numbered, refuse_out_of_memory, keys)
        args = [due, self._id_prefix, 1, max_attempts, record, given]  # "": automatic
        if self._max_ready:  # last, after the id
            args.append(self._max_ready)
        if not given:
            return self._call("enqueue", args, _one_numbered, refuse_out_of_memory, keys)

        def parse(reply: Any) -> str:
            checked(reply)
            return given

        return self._call("enqueue", args, parse, refuse_out_of_memory, keys)

    def enqueue_jobs(self, jobs: Sequence[NewJob], rank: Rank = UNRANKED) -> Call[list[str]]:
        """One enqueue call of jobs of this partition that share a ``Shared`` (at most
        ``batch_size``) and a rank: parses to their ids in order."""
        return self.enqueue([j[3] for j in jobs], [j[2] for j in jobs], jobs[0][1], rank)

    def lease(self, count: int, visibility_timeout: float | None = None) -> Call[Reservation]:
        """Reserve up to ``count`` jobs for ``visibility_timeout`` seconds (the queue's default)."""
        s = self.settings
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_BATCH:
            raise ConfigurationError(f"count must be an int from 0 to {MAX_BATCH}, got {count!r}")
        visibility = s.visibility_ms if visibility_timeout is None else _ms(visibility_timeout)
        return self.reserve(count, visibility_ms=visibility, max_attempts=s.max_attempts,
                            sweep_limit=SWEEP_LIMIT, token=lease_token(), limits=self._limits)

    def failure(self, job: Job, error: ErrorInfo, retry: bool = True) -> Call[Failed]:
        """Retry ``job`` after the queue's backoff for its attempt, or bury it with ``error``."""
        s = self.settings
        backoff_ms = round(s.backoff.delay(job.attempt, s.rng) * 1000)
        return self.fail(job.id, job.token, max_attempts=s.max_attempts, backoff_ms=backoff_ms,
                         error_json=error.to_json(), retryable=retry)

    def bury(self, job_id: str, token: str, error: ErrorInfo) -> Call[Failed]:
        """Send a leased job straight to the dead-letter queue (e.g. its record is corrupt)."""
        s = self.settings
        return self.fail(job_id, token, max_attempts=s.max_attempts, backoff_ms=0,
                         error_json=error.to_json(), retryable=False)

    def heartbeat(self, jobs: Iterable[Job], seconds: float | None = None) -> Call[Settled]:
        """Extend the leases of held jobs by ``seconds`` from now (the visibility timeout)."""
        s = self.settings
        visibility = s.visibility_ms if seconds is None else _ms(seconds)
        return self.extend(visibility, [(j.id, j.token) for j in jobs])

    # -- the scripts' own calls ----------------------------------------------------------------

    def _call(self, name: str, args: Sequence[Arg], parse: Callable[[Any], T],
              on_error: Callable[[Exception], T] | None = None,
              keys: Sequence[str] | None = None) -> Call[T]:
        script = self._scripts[name]
        if self._clock is not None and script.reads_clock:  # tests only: the variant's ARGV
            args = [self._clock.now_ms(), *args]
        if self._kept and name in self._kept:  # then the kept bounds (keep_cancelled.lua)
            args = [*args, *self._kept[name]]
        if self._events and name in self._events:  # last: the level and the stream's bound
            args = [*args, *self._events[name]]
        return Call(script, self._keys[name] if keys is None else keys, args, parse, on_error)

    def enqueue(
        self, ids: Sequence[str], records: Sequence[bytes], shared: Shared = PLAIN,
        rank: Rank = UNRANKED,
    ) -> Call[list[str]]:
        """Store jobs, ready now or when ``shared`` says, with its limit of deliveries; "" ids
        are numbered by the queue. Parses to the ids of the jobs (for a duplicate, the id it
        was given: the job already there is left as it was); raises QueueFullError if refused
        (max_ready, or Redis out of memory: nothing written). A ranked add (``rank`` not
        plain) sends the optional keys, every id, the priority and the group."""
        # Records, then the ids only when one is custom: a batch of automatic ids sends half
        # the arguments.
        due, max_attempts = shared
        args: list[Arg] = [due, self._id_prefix, len(records), max_attempts, *records]
        custom = any(ids)
        keys = self._plain_enqueue_keys
        if not rank.plain:  # every id, the priority and the group: then max_ready
            args += [*ids, rank.priority, rank.group or ""]
            keys = self._keys["enqueue"]
        elif custom or self._max_ready:  # max_ready comes last, after the ids ("": automatic)
            args += ids
        if self._max_ready:
            args.append(self._max_ready)

        def parse(reply: Any) -> list[str]:
            numbered = _numbered(reply).split(",")
            if not custom:
                return numbered
            numbers = iter(numbered)
            return [job_id or next(numbers) for job_id in ids]

        return self._call("enqueue", args, parse, refuse_out_of_memory, keys)

    def room(self) -> Call[Room]:
        """The jobs waiting in this partition and its server's memory, read before an add of
        several calls (see ``pyqcore.core.room``)."""

        def parse(reply: Any) -> Room:
            waiting, used, limit, server = checked(reply)[1:5]
            return Room(waiting, used, limit, text(server))

        return self._call("room", [], parse)

    def reserve(
        self, count: int, *, visibility_ms: int, max_attempts: int, sweep_limit: int, token: str,
        limits: Sequence[int] = (0, 0, 0, 0, 0, 0),
    ) -> Call[Reservation]:
        """Lease up to ``count`` jobs (after promoting due and reclaiming expired ones), within
        ``limits``: max_active, rate_limit's starts and window (ms), group_concurrency,
        group_rate_limit's starts and window (0 = none; ``QueueSettings.limits_of``)."""
        queue, loads, partition = self.queue, self.serializer, self.partition
        default_timeout = self.settings.timeout

        def parse(reply: Any) -> Reservation:
            reply = checked(reply)
            token, deadline, wait = text(reply[1]), reply[2] / 1000.0, reply[3]
            jobs: list[Job] = []
            bad: list[tuple[str, str, DeserializationError]] = []
            for i in range(5, len(reply), 3):
                job_id = reply[i].decode()
                try:
                    payload, context, enqueued_ms, own = decode_record(loads, reply[i + 1])
                except DeserializationError as exc:
                    bad.append((job_id, token, exc))
                    continue
                jobs.append(
                    Job(job_id, queue, payload, context, reply[i + 2], enqueued_ms / 1000.0,
                        token, deadline, partition, own / 1000.0 if own else default_timeout)
                )
            throttle = Throttle(reply[4])  # more_ready: call again at once (nothing held back)
            return Reservation(jobs, bad, None if wait < 0 else wait, partition,
                               wait == 0 and throttle is Throttle.NONE, throttle)

        return self._call(
            "reserve", [count, visibility_ms, max_attempts, sweep_limit, token, *limits], parse
        )

    def finish(self, jobs: Sequence[Job]) -> Call[Settled]:
        """Ack ``jobs``; on a queue that keeps completed jobs, keep them (and with
        store_results each ``job.result``, serialized) through complete.lua instead. A result
        that cannot be serialized is logged and not kept: the job still completes."""
        s = self.settings
        if not s.keeps_completed:
            return self.ack([(j.id, j.token) for j in jobs])
        args: list[Arg] = [round(s.keep_completed * 1000), s.keep_completed_count]
        for job in jobs:
            args += [job.id, job.token, self._result(job) if s.store_results else ""]
        return self._call("complete", args, _settled)

    def _result(self, job: Job) -> bytes:
        try:
            return self.serializer.dumps(job.result)
        except Exception as exc:  # the handler's value, not the caller's input: never lose the ack
            log.error("queue %s: job %s returned a value that cannot be serialized, not kept: "
                      "%s", self.queue, job.id, exc)
            return b""

    def ack(self, pairs: Iterable[tuple[str, str]]) -> Call[Settled]:
        """Finish (id, token) pairs; refused ids had stale tokens."""
        return self._call("ack", _pairs(pairs), _settled)

    def fail(
        self, job_id: str, token: str, *, max_attempts: int, backoff_ms: int, error_json: str,
        retryable: bool,
    ) -> Call[Failed]:
        """Retry after ``backoff_ms`` while attempts remain, else bury; raises LeaseLostError."""

        def parse(reply: Any) -> Failed:
            reply = checked(reply)
            return Failed(Outcome(text(reply[1])), reply[2])

        args: list[Arg] = [job_id, token, max_attempts, backoff_ms, error_json, int(retryable)]
        return self._call("fail", args, parse)

    def extend(self, visibility_ms: int, pairs: Iterable[tuple[str, str]]) -> Call[Settled]:
        """Move the lease deadline of held jobs to now + visibility (the server's now)."""

        def parse(reply: Any) -> Settled:
            reply = checked(reply)
            cancelled = 4 + reply[3]
            return Settled(reply[2], _ids(reply[cancelled:]), reply[1],
                           tuple(_ids(reply[4:cancelled])))

        return self._call("extend", [visibility_ms, *_pairs(pairs)], parse)

    def release(self, pairs: Iterable[tuple[str, str]]) -> Call[Settled]:
        """Return unstarted leased jobs to the front of ready, uncounted."""
        return self._call("release", _pairs(pairs), _settled)

    def redrive(
        self, max_redrives: int, max_age_ms: int = -1, offset: int = 0, limit: int = 1000,
        ids: Sequence[str] = (),
    ) -> Call[Redriven]:
        """Dead → ready for ``ids``, or for those dead for at most ``max_age_ms`` (-1: any)."""

        def parse(reply: Any) -> Redriven:
            return Redriven(*checked(reply)[1:5])

        return self._call("redrive", [max_redrives, max_age_ms, offset, limit, *ids], parse)

    def purge(self, min_age_ms: int = 0, limit: int = 1000, ids: Sequence[str] = ()) -> Call[int]:
        """Delete dead jobs dead for longer than ``min_age_ms`` (0: all), or exactly ``ids``."""

        def parse(reply: Any) -> int:
            count: int = checked(reply)[1]
            return count

        return self._call("purge", [min_age_ms, limit, *ids], parse)

    def peek_dead(self, offset: int, limit: int, ids: Sequence[str] = ()) -> Call[list[DeadRow]]:
        """Read dead jobs, oldest first (or exactly ``ids``)."""

        def parse(reply: Any) -> list[DeadRow]:
            reply = checked(reply)
            return [
                DeadRow(text(reply[i]), reply[i + 1], reply[i + 2], reply[i + 3], reply[i + 4])
                for i in range(1, len(reply), 5)
            ]

        return self._call("peek_dead", [offset, limit, *ids], parse)

    def read_schedules(self, names: Sequence[str], limit: int = 1
                       ) -> Call[tuple[int, list[Stored]]]:
        """The server's now (ms) and the schedules ``names`` of this queue, or the first
        ``limit`` due (``pyqcore.core.schedules``)."""
        return self._call("schedules", [limit, *names], parse_stored)

    def claim_schedule(self, schedule: Schedule, due_ms: int, next_ms: int,
                       runs: Sequence[int]) -> Call[int]:
        """Enqueue the runs of ``schedule`` due at ``runs`` if its due time is still
        ``due_ms`` (moving it to ``next_ms``); parses to how many jobs it added. Each run's
        record is dated by its due time and encoded with this queue's serializer."""
        s = self.settings
        timeout = timeout_ms(schedule.timeout)
        args: list[Arg] = [schedule.name, due_ms, next_ms,
                           0 if schedule.max_retries is None else schedule.max_retries + 1]
        for due in runs:
            args.append(schedule.run_id(due))
            args.append(encode_record(s.serializer, schedule.payload, schedule.context, due,
                                      s.max_payload_bytes, timeout_ms=timeout))

        def parse(reply: Any) -> int:
            added: int = checked(reply)[1]
            return added

        return self._call("schedule_claim", args, parse)
    def job_info(self, job_id: str) -> Call[JobRow | None]:
        """Where job ``job_id`` is in this partition, with its record, history and error."""

        def parse(reply: Any) -> JobRow | None:
            reply = checked(reply)
            if len(reply) == 1:
                return None
            row = JobRow(text(reply[1]), reply[2], reply[3], reply[4], int(float(reply[5])))
            if row.state not in ("completed", "cancelled"):
                return row
            # kept (a cancelled job's without its mark): b"attempts:redrives:" + record; its
            # history stands where meta's would
            attempts, redrives, record = (reply[2] or b"0:0:").split(b":", 2)
            return replace(row, record=record, meta=attempts + b":" + redrives,
                           result=reply[6] if len(reply) > 6 else None)

        return self._call("job_info", [given_id(job_id)], parse)

    def job_result(self, job_id: str) -> Call[ResultRow]:
        """Whether job ``job_id`` is live, dead, completed or cancelled in this partition (with
        its error or result), and the partition's last events entry id
        (``pyqcore.core.events``)."""

        def parse(reply: Any) -> ResultRow:
            reply = checked(reply)
            return ResultRow(text(reply[2]), reply[3] if len(reply) > 3 else None,
                             text(reply[1]))

        return self._call("result", [given_id(job_id)], parse)

    def cancel(self, job_ids: Sequence[str]) -> Call[list[int]]:
        """Cancel up to ``CANCEL_BATCH`` jobs: per id 1 deleted (it was waiting or delayed), 2
        marked (it is leased), 0 nothing done."""

        def parse(reply: Any) -> list[int]:
            return [int(outcome) for outcome in checked(reply)[1:]]

        return self._call("cancel", [given_id(i) for i in job_ids], parse)

    def clear(self, limit: int = 1000) -> Call[tuple[int, int]]:
        """Delete up to ``limit`` waiting jobs (ready, then delayed): (deleted, remaining)."""

        def parse(reply: Any) -> tuple[int, int]:
            reply = checked(reply)
            return int(reply[1]), int(reply[2])

        return self._call("clear", [limit], parse)

    def pause(self, paused: bool, group: str | None = None) -> Call[bool]:
        """Pause (or resume) the queue, or one group of it; parses to whether that changed."""

        def parse(reply: Any) -> bool:
            return bool(checked(reply)[1])

        return self._call("pause", [int(paused), group or ""], parse)

    def counts(self) -> Call[dict[str, int]]:
        """How many jobs are ready, delayed, leased and dead."""

        def parse(reply: Any) -> dict[str, int]:
            ready, delayed, leased, dead = checked(reply)[1:5]
            return {"ready": ready, "delayed": delayed, "leased": leased, "dead": dead}

        return self._call("counts", [], parse)


def lock_call(key: str, token: str, ttl_ms: int) -> Call[int | None]:
    """Take or refresh an item lock; parses to None when taken, else the holder's remaining ms."""
    script = load_scripts()["lock"]

    def parse(reply: Any) -> int | None:
        if reply and reply[0] == Code.LOCKED:
            remaining: int = reply[1]
            return remaining
        checked(reply)
        return None

    return Call(script, [key], [token, ttl_ms], parse)


def unlock_call(key: str, token: str) -> Call[bool]:
    """Release an item lock if ``token`` still holds it."""

    def parse(reply: Any) -> bool:
        return bool(checked(reply)[1])

    return Call(load_scripts()["unlock"], [key], [token], parse)
