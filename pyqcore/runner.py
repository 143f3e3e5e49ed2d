"""Sends core ``Call``s to Redis: EVALSHA, and on NOSCRIPT (a restart or ``SCRIPT FLUSH``) loads
the script and sends again. The only place the sync API touches script execution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import NoScriptError

from pyqcore.core import Call
from pyqcore.errors import ConfigurationError

T = TypeVar("T")
Client = redis.Redis | redis.RedisCluster


def require_bytes_client(client: Any) -> None:
    """Job records are bytes: a client that decodes replies to str would corrupt them."""
    kwargs = client.get_connection_kwargs() if hasattr(client, "get_connection_kwargs") else {}
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "pyqcore needs a Redis client created with decode_responses=False (the default)"
        )


class Runner:
    """Executes script calls on a redis-py client (standalone or cluster)."""

    def __init__(self, client: Client) -> None:
        require_bytes_client(client)
        self.client = client

    def run(self, call: Call[T]) -> T:
        """Send one call and parse its reply."""
        script = call.script
        try:
            reply = self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            self.client.script_load(script.source)
            reply = self.client.evalsha(script.sha, len(call.keys), *call.keys, *call.args)
        return call.parse(reply)

    def run_all(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order."""
        if len(calls) == 1:
            return [self.run(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies = pipe.execute(raise_on_error=False)
        results = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                results.append(self.run(call))
            elif isinstance(reply, Exception):
                raise reply
            else:
                results.append(call.parse(reply))
        return results
