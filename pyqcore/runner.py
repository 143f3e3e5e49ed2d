"""Sends core ``Call``s to Redis: EVALSHA, and on NOSCRIPT (a restart, a failover or
``SCRIPT FLUSH``) loads the script and sends again. The only place the sync API touches script
execution.

On Redis Cluster, EVALSHA is routed by its KEYS (every KEYS entry of a call carries the queue's
hash tag, so a call names exactly one slot), and a script is loaded on the primary that owns
that slot: each primary has its own script cache, and only the owner's matters for the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pyqcore.core import Call
from pyqcore.errors import ConfigurationError

T = TypeVar("T")
Client = redis.Redis | RedisCluster


def require_bytes_client(client: Any) -> None:
    """Job records are bytes: a client that decodes replies to str would corrupt them.
    (Both ``Redis`` and ``RedisCluster`` expose their connection options this way.)"""
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "pyqcore needs a Redis client created with decode_responses=False (the default)"
        )


def evalsha_args(call: Call[Any]) -> tuple[Any, ...]:
    """The EVALSHA command of a call (for execute_command, which cluster pipelines route)."""
    return ("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)


def eval_args(call: Call[Any]) -> tuple[Any, ...]:
    """The EVAL command of a call: the source itself, for when the script cache lost it."""
    return ("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)


def parse_replies(
    calls: Sequence[Call[Any]], replies: Sequence[Any]
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


class Runner:
    """Executes script calls on a redis-py client (standalone or cluster)."""

    def __init__(self, client: Client) -> None:
        require_bytes_client(client)
        self.client = client

    def run(self, call: Call[T]) -> T:
        """Send one call and parse its reply. On NOSCRIPT (a restart or SCRIPT FLUSH emptied
        the cache) the source goes with EVAL, which cannot miss and refills the cache of the
        node that runs it; SCRIPT LOAD then EVALSHA could race a second flush."""
        try:
            reply = self.client.execute_command(*evalsha_args(call))  # type: ignore[no-untyped-call]
        except NoScriptError:
            reply = self.client.execute_command(*eval_args(call))  # type: ignore[no-untyped-call]
        return call.parse(reply)

    def run_all(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order. On a
        cluster the pipeline sends each call to its slot's primary, one batch per node."""
        if len(calls) == 1:
            return [self.run(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            # execute_command, not pipe.evalsha: ClusterPipeline blocks the evalsha method
            # (it cannot know the keys of arbitrary scripts), but routes EVALSHA by its KEYS.
            pipe.execute_command(*evalsha_args(call))
        results, missing = parse_replies(calls, pipe.execute(raise_on_error=False))
        for i in missing:
            results[i] = self.run(calls[i])
        return results
