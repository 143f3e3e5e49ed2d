"""What the sync and asyncio drivers share that is not I/O: the client check, the command each
call sends, reading a pipeline's replies, and which driver method performs which effect.

A driver subclasses ``Driving`` and defines, blocking or ``async``, one method per effect:
``call`` (a script), ``call_all`` (a round trip), ``command``, ``block``, ``read``,
``pause`` and ``turn`` (waiting on its own ``new_waiter``, for coalesced adds);
``perform`` picks the method for an effect (and returns its result, or its coroutine).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pyqcore.core.calls import Call
from pyqcore.core.effects import Block, Command, Pause, Read, Turn
from pyqcore.errors import ConfigurationError

_METHODS = {Call: "call", list: "call_all", Command: "command", Block: "block", Read: "read",
            Pause: "pause", Turn: "turn"}


class Driving:
    """The effect dispatch and client checks of a driver (see the module docstring)."""

    def __init__(self, client: Any) -> None:
        require_bytes_client(client)
        self.client = client
        self.cluster = isinstance(client, RedisCluster | AsyncRedisCluster)
        self._performers = {kind: getattr(self, name, None) for kind, name in _METHODS.items()}

    def perform(self, effect: Any) -> Any:
        """Perform one effect (see the table in ``pyqcore.core.effects``)."""
        method = self._performers.get(type(effect))
        if method is None:
            raise TypeError(f"{type(self).__name__} cannot perform {effect!r}")
        return method(effect)

    def pipeline_of(self, calls: Sequence[Call[Any] | Command]) -> Any:
        """A non-transactional pipeline holding ``calls``. On a cluster it sends each call to
        its slot's primary, one batch per node (execute_command, not pipe.evalsha:
        ClusterPipeline blocks evalsha, which cannot know a script's keys, but routes EVALSHA
        by its KEYS)."""
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*command_of(call))
        return pipe

    def longest_block(self) -> float:
        """How long a blocking call may wait on this client: below its socket timeout
        (redis-py 8 defaults it to 5 s), or the BLPOP would outlive the socket and fail instead
        of waking."""
        kwargs = self.client.get_connection_kwargs()
        timeout = (kwargs["socket_timeout"] if "socket_timeout" in kwargs
                   else default_socket_timeout(self.client))
        return 0.8 * timeout if timeout else float("inf")

    def read(self, read: Read) -> Any:
        """XREAD of streams, blocking at most ``block_ms``. (On the asyncio client, the
        coroutine of the read, which its driver awaits as it awaits every effect.)"""
        return self.client.xread(read.streams, count=read.most, block=self.block_ms(read))

    def block_ms(self, read: Read) -> int | None:
        """The BLOCK of a ``Read``: None (do not block), else ms within ``longest_block``
        (0, Redis's "no limit", only when neither the read nor the socket has one)."""
        if read.timeout is None:
            return None
        seconds = min(read.timeout, self.longest_block())
        return 0 if math.isinf(seconds) else max(1, round(seconds * 1000))


def default_socket_timeout(client: Any) -> float | None:
    """The socket timeout of a client whose options do not set one: its connections' default.
    (A pool made by Sentinel's ``master_for`` passes none unless asked, and redis-py 8's
    connections then time out after 5 s, where redis-py 5 waited forever.)"""
    connection_class: type = getattr(getattr(client, "connection_pool", None),
                                     "connection_class", object)
    for klass in connection_class.__mro__:  # the first __init__ naming it, past the **kwargs
        init = vars(klass).get("__init__")
        parameter = inspect.signature(init).parameters.get("socket_timeout") if init else None
        if parameter is not None:
            default = parameter.default
            return float(default) if isinstance(default, int | float) else None
    return None


def require_bytes_client(client: Any) -> None:
    """Job records are bytes: a client that decodes replies to str would corrupt them.
    (``Redis`` and ``RedisCluster``, sync and asyncio, expose their options this way.)"""
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "pyqcore needs a Redis client created with decode_responses=False (the default)"
        )


def command_of(call: Call[Any] | Command) -> tuple[Any, ...]:
    """The command a call sends: EVALSHA for a script, the arguments of a plain command."""
    if isinstance(call, Command):
        return call.args
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def eval_args(call: Call[Any]) -> tuple[Any, ...]:
    """The EVAL command of a call: the source itself, for when the script cache lost it."""
    return ("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)


def parse_replies(
    calls: Sequence[Call[Any] | Command], replies: Sequence[Any]
) -> tuple[list[Any], list[tuple[int, Call[Any]]]]:
    """A pipeline's replies parsed by their calls, and the calls that got NOSCRIPT with their
    positions (to be sent again with EVAL). Any other error reply goes to the script call's
    ``error_reply`` (a command's is raised)."""
    results: list[Any] = []
    missing: list[tuple[int, Call[Any]]] = []
    for i, (call, reply) in enumerate(zip(calls, replies, strict=True)):
        if isinstance(reply, NoScriptError) and isinstance(call, Call):
            missing.append((i, call))
            results.append(None)
        elif isinstance(reply, Exception):
            if not isinstance(call, Call):
                raise reply
            results.append(call.error_reply(reply))
        else:
            results.append(call.parse(reply))
    return results, missing
