"""The values pyqcore hands out: a leased ``Job``, a ``DeadLetterItem``, and job records.

A job record is what the jobs hash stores: ``serializer.dumps([payload, context, enqueued_ms])``,
or ``[payload, context, enqueued_ms, timeout_ms]`` for a job added with its own timeout.
Records are immutable; a lease is a member of the leased set, past deliveries are in meta.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pyqcore.errors import DeserializationError, PayloadTooLargeError, SerializationError
from pyqcore.serializer import Serializer


@dataclass(slots=True)
class Job:
    """One delivery of a job: what ``process_job`` gets, and the lease that ``ack`` needs."""

    id: str
    queue: str
    payload: Any
    context: Any
    attempt: int  # delivery number: 1 on the first delivery
    enqueued_at: float  # seconds since the epoch
    token: str  # the lease token; ack/fail/extend are refused once it is stale
    lease_deadline: float  # seconds since the epoch; extended by heartbeats
    partition: int = 0  # which partition of a partitioned queue holds it (0 otherwise)
    timeout: float | None = None  # seconds a run may take: the job's own, else the queue's
    cancelled: bool = False  # queue.cancel(id) asked it to stop: seen at the next heartbeat
    result: Any = None  # what the handler returned (kept when the queue has store_results)


def run_timeout(jobs: Sequence[Job]) -> float | None:
    """The timeout of a run of ``jobs`` (a batch handler's): the shortest of theirs, or None."""
    timeouts = [job.timeout for job in jobs if job.timeout is not None]
    return min(timeouts) if timeouts else None


JobState = Literal["waiting", "delayed", "active", "completed", "dead", "cancelled"]


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What ``queue.get_job(id)`` knows of one job, read in one consistent view. Times are
    seconds since the epoch on the Redis server's clock."""

    id: str
    queue: str
    state: JobState
    payload: Any  # None when the record cannot be decoded (see ``record``)
    context: Any
    attempts: int  # deliveries so far: failed or expired ones, plus the running one if active
    redrives: int  # trips from the dead-letter queue back to ready
    added_at: float | None  # when the producer added it (None: record undecodable)
    due_at: float | None = None  # delayed: when it becomes ready
    lease_deadline: float | None = None  # active: when its lease ends unless extended
    finished_at: float | None = None  # dead, completed, cancelled (kept): when it ended so
    error: ErrorInfo | None = None  # the last failed delivery's error
    cancel_requested: bool = False  # active, and queue.cancel asked it to stop
    result: Any = None  # completed, with store_results: what the handler returned
    record: bytes | None = None  # the raw stored record, kept when it cannot be decoded
    partition: int = 0  # which partition of a partitioned queue holds it (0 otherwise)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a job failed: exception type, message and the end of its traceback."""

    type: str
    message: str
    traceback: str = ""

    MAX_MESSAGE = 2000
    MAX_TRACEBACK_LINES = 30

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Capture an exception, bounded in size so a huge message cannot bloat Redis."""
        lines = traceback.format_exception(exc)
        return cls(
            type=type(exc).__qualname__,
            message=str(exc)[: cls.MAX_MESSAGE],
            traceback="".join(lines[-cls.MAX_TRACEBACK_LINES :]),
        )

    def to_json(self) -> str:
        """The stored form: JSON, so Lua (cjson) and redis-cli users can read and write it."""
        return json.dumps(
            {"type": self.type, "message": self.message, "traceback": self.traceback},
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | None) -> ErrorInfo | None:
        """Parse a stored error; an unreadable one is kept as its text rather than lost."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(str(data["type"]), str(data["message"]), str(data.get("traceback", "")))
        except (ValueError, KeyError, TypeError):
            return cls("Unreadable", raw.decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class DeadLetterItem:
    """A job in the dead-letter queue, with everything needed to judge or redrive it."""

    queue: str
    job_id: str
    payload: Any  # None when the record could not be decoded (see ``record``)
    context: Any
    error: ErrorInfo | None
    failed_at: float  # seconds since the epoch
    attempts: int
    redrives: int
    enqueued_at: float | None
    record: bytes | None  # the raw stored record, kept when it cannot be decoded
    partition: int = 0  # which partition of a partitioned queue holds it (0 otherwise)


def encode_record(
    serializer: Serializer, payload: Any, context: Any, enqueued_ms: int, max_bytes: int, *,
    timeout_ms: int = 0,
) -> bytes:
    """Serialize one job record (with the job's own timeout, if it has one: ``timeout_ms``),
    or raise SerializationError / PayloadTooLargeError."""
    try:
        record = serializer.dumps([payload, context, enqueued_ms, timeout_ms] if timeout_ms
                                  else [payload, context, enqueued_ms])
    except SerializationError as exc:  # its path is in the record: say payload or context
        message = str(exc)
        for index, part in (("$[0]", "payload: $"), ("$[1]", "context: $")):
            if message.startswith(index):
                message = part + message[len(index):]
        raise type(exc)(message) from None
    except Exception as exc:  # a plug-in serializer's own error type
        raise SerializationError(f"cannot serialize job: {exc}") from exc
    if len(record) > max_bytes:
        raise PayloadTooLargeError(
            f"job record is {len(record)} bytes, over the queue's max_payload_bytes={max_bytes}"
        )
    return record


def encode_records(
    serializer: Serializer, payloads: Sequence[Any], contexts: Sequence[Any], enqueued_ms: int,
    max_bytes: int, *, timeout_ms: int = 0,
) -> list[bytes]:
    """Serialize job records, all before any write: any failure raises, naming the job's
    position in the batch when there are several."""
    try:
        return [encode_record(serializer, p, c, enqueued_ms, max_bytes, timeout_ms=timeout_ms)
                for p, c in zip(payloads, contexts, strict=True)]
    except SerializationError as exc:
        if len(payloads) == 1:
            raise
        for i, (payload, context) in enumerate(zip(payloads, contexts, strict=True)):
            try:
                encode_record(serializer, payload, context, enqueued_ms, max_bytes)
            except SerializationError:
                raise type(exc)(f"job {i} of the batch of {len(payloads)}: {exc}") from None
        raise  # it failed once and not again: a value that changed meanwhile


def decode_record(serializer: Serializer, record: bytes) -> tuple[Any, Any, int, int]:
    """Parse a stored record into (payload, context, enqueued_ms, timeout_ms: 0 for none) or
    raise DeserializationError."""
    try:
        value = serializer.loads(record)
    except DeserializationError:
        raise
    except Exception as exc:
        raise DeserializationError(f"cannot decode job record: {exc}") from exc
    if not (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[2], int)):
        raise DeserializationError("not a job record: expected [payload, context, enqueued_ms]")
    if len(value) == 3:
        return value[0], value[1], value[2], 0
    if len(value) == 4 and type(value[3]) is int and value[3] > 0:
        return value[0], value[1], value[2], value[3]
    raise DeserializationError("not a job record: expected [payload, context, enqueued_ms] "
                               "or [payload, context, enqueued_ms, timeout_ms]")
