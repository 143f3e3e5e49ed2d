"""Redis failures, without I/O: which redis-py errors mean Redis could not be reached
(``TRANSIENT``: a worker rides them out), the typed pyqcore error an operation raises for them
instead (``typed``, written once: each driver calls ``raise_typed`` where an error leaves an
operation), and how long an outage has lasted, as the slots of one worker see it
(``Outage``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NoReturn

from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyqcore.errors import PyqcoreError, RedisAuthenticationError, RedisUnavailableError

# Redis is unreachable or not answering: a refused, reset or timed-out connection (with
# Sentinel: no primary known yet, MasterNotFoundError), or a cluster in mid-failover answering
# CLUSTERDOWN or TRYAGAIN, or the client's slot map has a hole, until a replica is promoted.
# (redis.asyncio raises the same classes.) An AuthenticationError is a ConnectionError too.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
             SlotNotCoveredError)


def typed(exc: BaseException) -> PyqcoreError | None:
    """The pyqcore error for redis-py's ``exc``, if it is a connection-level one:
    RedisAuthenticationError when Redis refused the credentials, RedisUnavailableError when it
    could not be reached or did not answer; None for any other error (which stays as it is)."""
    if isinstance(exc, PyqcoreError):
        return None
    if isinstance(exc, AuthenticationError):
        return RedisAuthenticationError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, TRANSIENT) or (isinstance(exc, RedisClusterException)
                                       and isinstance(exc.__cause__, TRANSIENT)):
        # (a cluster client that reaches none of its nodes wraps the connection error)
        return RedisUnavailableError(f"Redis is unavailable ({type(exc).__name__}): {exc}")
    return None


def raise_typed(exc: BaseException) -> NoReturn:
    """Raise ``exc``'s pyqcore error (``typed``) with ``exc`` as its ``__cause__``, or ``exc``
    itself when it has none. The drivers call it where an error leaves them (a flow's, or a
    script call's), in an ``except`` clause: free while nothing fails."""
    error = typed(exc)
    if error is None:
        raise exc
    raise error from exc


class Outage:
    """How long Redis has been failing the calls of a worker's slots: since the first failure
    after the last success (monotonic seconds; thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: float | None = None
        self._lock = threading.Lock()

    def failed(self) -> float:
        """A call failed: the seconds since the outage began (0 for its first failure)."""
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now
            return now - self._since

    def ended(self) -> None:
        """A call succeeded: Redis answers again."""
        self._since = None
