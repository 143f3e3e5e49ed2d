"""The flow protocol: how the sans-I/O core asks a driver for I/O.

A flow is a generator. Each value it yields is an *effect*, a request for one piece of I/O; the
driver performs it and sends the result back in (``flow.send``), or, if performing it raised,
throws that exception in at the ``yield`` (``flow.throw``), where the flow may catch it (a
transient Redis error, say) or let it propagate to the caller. The flow's return value is the
operation's result. The effects:

=====================  =============================================================  =========
yielded                performed as                                                   sent back
=====================  =============================================================  =========
``Call``               ``EVALSHA`` of one Lua script (``EVAL`` on NOSCRIPT)           parsed reply
``Command``            one plain Redis command                                        parsed reply
``list`` of the two    one round trip: a pipeline, each call still atomic on its own  replies
``Block``              ``BLPOP`` on wake lists, at most ``timeout`` seconds           None
``Read``               ``XREAD [BLOCK]`` of streams after the ids given               reply
``Pause``              sleep ``seconds``, or less if the ``until`` flag gets set      the flag
``Job``                run the queue's handler on that job                            its error
``Batch``              run the queue's batch handler on those jobs                    see Batch
``Turn``               wait until another flow wakes the waiter (coalesced adds)      None
=====================  =============================================================  =========

A script call's error reply (in a round trip too) goes to ``Call.error_reply``: raised as it
came, unless the call was built to read it (an enqueue call turns Redis's out-of-memory error
into QueueFullError; in a batch of several calls, into a value, so the flow knows which wrote).

A driver (``pyqcore.sync.driver``, ``pyqcore.asyncio.driver``) is that table and nothing else:
every decision about which call comes next lives in the flows, written once for both.
An operation that is a single script call may be a bare ``Call`` instead of a flow; the
driver then runs its ``done`` hook, if set, once the call's I/O is over, whatever happened (a
lone add frees its place among the calls in flight: ``pyqcore.core.coalesce``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple, Protocol, TypeVar

from pyqcore.core.calls import Call
from pyqcore.job import Job

T = TypeVar("T")


def _as_is(reply: Any) -> Any:
    return reply


class Command(NamedTuple):
    """One plain (non-script) Redis command, the parser of its reply, and options for the
    client's ``execute_command`` (e.g. ``target_nodes`` on a cluster)."""

    args: tuple[Any, ...]
    parse: Callable[[Any], Any] = _as_is
    options: dict[str, Any] = {}  # noqa: RUF012 - never mutated


class Block(NamedTuple):
    """``BLPOP keys timeout``: wait for a wake marker (an add, a retry) without polling."""

    keys: list[str]
    timeout: float


class Read(NamedTuple):
    """``XREAD COUNT most [BLOCK ms] STREAMS key... id...``: the entries after each id, read
    without polling. ``timeout`` None reads what is there; seconds (``math.inf``: no limit)
    block until an entry comes, but never past the client's socket timeout (the driver waits
    at most ``longest_block``, as for ``Block``, and then sends back an empty reply: the flow
    decides whether to read again). Sends back redis-py's reply, as it came."""

    streams: dict[str, str]
    timeout: float | None
    most: int = 100  # entries per stream


class Flag(Protocol):
    """A threading.Event or an asyncio.Event, as flows see it."""

    def is_set(self) -> bool: ...


class Alarm(Flag, Protocol):
    """A flag that can be set and cleared: a threading.Event or an asyncio.Event."""

    def set(self) -> None: ...

    def clear(self) -> None: ...


class Pause(NamedTuple):
    """Sleep ``seconds``; with ``until``, wake as soon as that flag is set. Sends back whether
    the flag is set (False without one)."""

    seconds: float
    until: Flag | None = None


class Waiter(Protocol):
    """A driver's waiting primitive (a lock a thread blocks on, a future a task awaits),
    woken once by another caller's flow (``pyqcore.core.coalesce``)."""

    def wake(self) -> None: ...


class Turn(NamedTuple):
    """Wait until ``waiter`` is woken: by the flow that sent this caller's item along with its
    own, or that hands this caller the next call to send. Sends back None."""

    waiter: Waiter


class Batch(NamedTuple):
    """Run the batch handler on ``jobs``. Sends back what it returned (None, or failed job id
    -> exception), or the exception it raised."""

    jobs: list[Job]


Flow = Generator[Any, Any, T]
"""A generator that yields effects and returns the operation's result (typed by T)."""


def flow_of(operation: Call[T] | Flow[T]) -> Flow[T]:
    """An operation as a flow, for ``yield from`` inside another flow (a bare Call becomes a
    one-step flow)."""
    if isinstance(operation, Call):
        reply: T = yield operation
        return reply
    return (yield from operation)
