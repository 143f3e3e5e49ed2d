"""Typed errors: every failure pyqcore reports is one of these, so callers can catch precisely."""

from __future__ import annotations

from typing import Any

from redis.exceptions import AuthenticationError as RedisAuthFailure
from redis.exceptions import ConnectionError as RedisConnectionFailure


class PyqcoreError(Exception):
    """Base class of every error pyqcore raises."""


class ConfigurationError(PyqcoreError, ValueError):
    """A setting is out of range or inconsistent (negative retries, zero timeout, ...)."""


class SerializationError(PyqcoreError, TypeError):
    """A value cannot be encoded; raised before anything is written to Redis."""


class DeserializationError(PyqcoreError, ValueError):
    """Bytes read from Redis are not a valid record for the serializer in use."""


class PayloadTooLargeError(SerializationError):
    """An encoded job record exceeds the queue's ``max_payload_bytes``."""


class UnknownQueueError(PyqcoreError, KeyError):
    """``get_queue`` was asked for a name that was never registered."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain message
        return str(self.args[0]) if self.args else "unknown queue"


class QueueFullError(PyqcoreError):
    """An add was refused: the queue holds ``max_ready`` waiting jobs, or Redis is out of
    memory (``used_memory`` above ``maxmemory``). ``ids`` has one entry per job of the add, in
    order: the job's id if it was written, else None; all None (nothing written) unless another
    producer raced a batch of several script calls (see the README, "Memory pressure")."""

    def __init__(self, message: str, ids: list[str | None] | None = None) -> None:
        super().__init__(message)
        self.ids: list[str | None] = ids if ids is not None else []


class LeaseLostError(PyqcoreError):
    """The job's lease token is stale: the lease expired and the job moved on without us."""


class ScriptError(PyqcoreError):
    """A Lua script refused its arguments (it wrote nothing) or replied in an unexpected shape."""


class AddInterruptedError(PyqcoreError):
    """The script call that carried this add together with other callers' adds (see
    ``pyqcore.core.coalesce``) was interrupted: its sender was cancelled while the call was in
    flight, so the job may or may not be stored. Adding it again with the same ``job_id`` is
    safe."""


class LockNotAcquiredError(PyqcoreError):
    """``queue.lock(key)`` could not get the lock before its timeout."""


class JobTimeoutError(PyqcoreError):
    """A delivery ran past its timeout (the queue's ``timeout``, or the job's own): the worker
    failed it (retried or dead as usual), cancelling an ``async def`` handler."""


class NonRetryableError(PyqcoreError):
    """Raise from ``process_job`` to send the job straight to the dead-letter queue."""


class RedisUnavailableError(PyqcoreError, RedisConnectionFailure):
    """Redis could not be reached or did not answer in time (a refused, reset or timed-out
    connection; a cluster or Sentinel with no primary for the data yet), and the call gave up.
    ``__cause__`` is redis-py's error. After a timeout the command may still have run. It is
    also a ``redis.ConnectionError``, as the errors it replaces were."""


class RedisAuthenticationError(PyqcoreError, RedisAuthFailure):
    """Redis refused the credentials (a wrong password or user, or none where one is needed).
    ``__cause__`` is redis-py's error; it is also a ``redis.AuthenticationError``."""


class JobNotFoundError(PyqcoreError, LookupError):
    """``queue.result(job_id)``: no job has that id (never added, or already gone: purged, or
    its kept entry, completed or cancelled, trimmed by ``keep_completed``)."""


class JobDeadError(PyqcoreError):
    """``queue.result(job_id)``: the job failed for good and is in the dead-letter queue;
    ``error`` is its last error (a ``pyqcore.ErrorInfo``, or None if none was recorded; typed
    Any here, since pyqcore.job imports this module)."""

    def __init__(self, message: str, job_id: str = "", error: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.error = error


class JobCancelledError(PyqcoreError):
    """``queue.result(job_id)``: the job was cancelled (``cancel``, ``clear``), so it has no
    result."""


class ResultTimeoutError(PyqcoreError, TimeoutError):
    """``queue.result(job_id, timeout=...)``: the job had not finished when the timeout
    passed (it may still finish later)."""
