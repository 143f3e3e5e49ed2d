"""Sends core ``Call``s on a ``redis.asyncio`` client (standalone or cluster): the asyncio twin
of ``pyqcore.runner``, with the same EVALSHA, NOSCRIPT -> EVAL and pipeline behaviour."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pyqcore.core import Call
from pyqcore.runner import eval_args, evalsha_args, parse_replies, require_bytes_client

T = TypeVar("T")
AsyncClient = redis.asyncio.Redis | RedisCluster


class AsyncRunner:
    """Executes script calls on a redis.asyncio client."""

    def __init__(self, client: AsyncClient) -> None:
        require_bytes_client(client)
        self.client = client

    async def run(self, call: Call[T]) -> T:
        """Send one call and parse its reply; on NOSCRIPT the source goes with EVAL."""
        try:
            reply = await self.client.execute_command(*evalsha_args(call))
        except NoScriptError:
            reply = await self.client.execute_command(*eval_args(call))
        return call.parse(reply)

    async def run_all(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order."""
        if len(calls) == 1:
            return [await self.run(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*evalsha_args(call))
        results, missing = parse_replies(calls, await pipe.execute(raise_on_error=False))
        for i in missing:
            results[i] = await self.run(calls[i])
        return results
