"""The sync driver: performs the core's effects (``pyqcore.core.effects``) on a redis-py client,
blocking. Script calls go as EVALSHA; on NOSCRIPT (a restart, a failover or ``SCRIPT FLUSH``)
the source goes with EVAL, which cannot miss and refills the cache of the node that runs it
(SCRIPT LOAD then EVALSHA could race a second flush).

On Redis Cluster, EVALSHA is routed by its KEYS (every KEYS entry of a call carries the queue's
hash tag, so a call names exactly one slot), and a script is loaded on the primary that owns
that slot: each primary has its own script cache, and only the owner's matters for the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pyqcore.core.calls import Call
from pyqcore.core.effects import Block, Command, Flow, Pause, Steps
from pyqcore.errors import ConfigurationError

T = TypeVar("T")
Client = redis.Redis | RedisCluster


def require_bytes_client(client: Any) -> None:
    """Job records are bytes: a client that decodes replies to str would corrupt them.
    (Both ``Redis`` and ``RedisCluster``, sync and asyncio, expose their options this way.)"""
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "pyqcore needs a Redis client created with decode_responses=False (the default)"
        )


def command_of(call: Call[Any] | Command) -> tuple[Any, ...]:
    """The command a call sends: EVALSHA for a script (execute_command, which cluster
    pipelines route by KEYS), the arguments of a plain command."""
    if isinstance(call, Command):
        return call.args
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def eval_args(call: Call[Any]) -> tuple[Any, ...]:
    """The EVAL command of a call: the source itself, for when the script cache lost it."""
    return ("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)


def parse_replies(
    calls: Sequence[Call[Any] | Command], replies: Sequence[Any]
) -> tuple[list[Any], list[int]]:
    """A pipeline's replies parsed by their calls, and the positions that got NOSCRIPT (to be
    sent again with EVAL). Any other error reply is raised."""
    results: list[Any] = []
    missing: list[int] = []
    for i, (call, reply) in enumerate(zip(calls, replies, strict=True)):
        if isinstance(reply, NoScriptError):
            missing.append(i)
            results.append(None)
        elif isinstance(reply, Exception):
            raise reply
        else:
            results.append(call.parse(reply))
    return results, missing


def longest_block(client: Any) -> float:
    """How long a blocking call may wait on this client: below its socket timeout (redis-py 8
    defaults it to 5 s), or the BLPOP would outlive the socket and fail instead of waking."""
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    timeout = get_kwargs().get("socket_timeout") if get_kwargs else None
    return 0.8 * timeout if timeout else float("inf")


class SyncDriver:
    """Runs flows on a redis-py client (standalone or cluster), blocking."""

    def __init__(self, client: Client) -> None:
        require_bytes_client(client)
        self.client = client
        self.cluster = isinstance(client, RedisCluster)

    def run(self, operation: Call[T] | Flow[T]) -> T:
        """Perform an operation's effects until it returns; its result."""
        if type(operation) is Call:
            return self.call(operation)
        return self.drive(operation, self.perform)  # type: ignore[arg-type]

    @staticmethod
    def drive(flow: Flow[T], perform: Callable[[Any], Any]) -> T:
        """Run ``flow``, performing each effect with ``perform`` (whose exceptions are thrown
        back into the flow)."""
        steps = Steps(flow)
        while steps.running:
            try:
                value = perform(steps.effect)
            except Exception as exc:
                steps.throw(exc)
            else:
                steps.send(value)
        result: T = steps.result
        return result

    def perform(self, effect: Any) -> Any:
        """One effect (see the table in ``pyqcore.core.effects``)."""
        kind = type(effect)
        if kind is Call:
            return self.call(effect)
        if kind is list:
            return self.call_all(effect)
        if kind is Command:
            return effect.parse(self.client.execute_command(*effect.args))  # type: ignore[no-untyped-call]
        if kind is Block:
            return self.client.blpop(effect.keys, effect.timeout)
        if kind is Pause:
            return self.pause(effect)
        raise TypeError(f"{type(self).__name__} cannot perform {effect!r}")

    @staticmethod
    def pause(pause: Pause) -> bool:
        """Sleep, or wait on the flag (a threading.Event) for at most that long."""
        if pause.until is None:
            time.sleep(pause.seconds)
            return False
        if not isinstance(pause.until, threading.Event):
            raise TypeError(f"the sync driver waits on threading.Event, not {pause.until!r}")
        return pause.until.wait(pause.seconds)

    def call(self, call: Call[T]) -> T:
        """Send one script call and parse its reply (EVAL with the source on NOSCRIPT)."""
        try:
            reply = self.client.execute_command(*command_of(call))  # type: ignore[no-untyped-call]
        except NoScriptError:
            reply = self.client.execute_command(*eval_args(call))  # type: ignore[no-untyped-call]
        return call.parse(reply)

    def call_all(self, calls: Sequence[Call[Any] | Command]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order. On a
        cluster the pipeline sends each call to its slot's primary, one batch per node."""
        if len(calls) == 1 and isinstance(calls[0], Call):
            return [self.call(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            # execute_command, not pipe.evalsha: ClusterPipeline blocks the evalsha method
            # (it cannot know the keys of arbitrary scripts), but routes EVALSHA by its KEYS.
            pipe.execute_command(*command_of(call))
        results, missing = parse_replies(calls, pipe.execute(raise_on_error=False))
        for i in missing:
            results[i] = self.call(calls[i])  # type: ignore[arg-type]
        return results
