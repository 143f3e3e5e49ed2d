"""The asyncio driver: performs the core's effects (``pyqcore.core.effects``) on a
``redis.asyncio`` client (standalone or cluster), awaited. The commands sent are those of the
sync driver (``pyqcore.sync.driver``), with the same NOSCRIPT -> EVAL and pipeline behaviour."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from pyqcore.core.calls import Call
from pyqcore.core.effects import Block, Command, Flow, Pause, Steps
from pyqcore.sync.driver import command_of, eval_args, parse_replies, require_bytes_client

T = TypeVar("T")
AsyncClient = redis.asyncio.Redis | RedisCluster


class AsyncDriver:
    """Runs flows on a redis.asyncio client."""

    def __init__(self, client: AsyncClient) -> None:
        require_bytes_client(client)
        self.client = client
        self.cluster = isinstance(client, RedisCluster)

    async def run(self, operation: Call[T] | Flow[T]) -> T:
        """Perform an operation's effects until it returns; its result."""
        if type(operation) is Call:
            return await self.call(operation)
        return await self.drive(operation, self.perform)  # type: ignore[arg-type]

    @staticmethod
    async def drive(flow: Flow[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
        """Run ``flow``, awaiting ``perform`` for each effect (its exceptions are thrown back
        into the flow)."""
        steps = Steps(flow)
        while steps.running:
            try:
                value = await perform(steps.effect)
            except Exception as exc:
                steps.throw(exc)
            else:
                steps.send(value)
        result: T = steps.result
        return result

    async def perform(self, effect: Any) -> Any:
        """One effect (see the table in ``pyqcore.core.effects``)."""
        kind = type(effect)
        if kind is Call:
            return await self.call(effect)
        if kind is list:
            return await self.call_all(effect)
        if kind is Command:
            return effect.parse(await self.client.execute_command(*effect.args))
        if kind is Block:
            return await self.client.blpop(effect.keys, effect.timeout)
        if kind is Pause:
            return await self.pause(effect)
        raise TypeError(f"{type(self).__name__} cannot perform {effect!r}")

    @staticmethod
    async def pause(pause: Pause) -> bool:
        """Sleep, or wait on the flag (an asyncio.Event) for at most that long."""
        if pause.until is None:
            await asyncio.sleep(pause.seconds)
            return False
        if not isinstance(pause.until, asyncio.Event):
            raise TypeError(f"the asyncio driver waits on asyncio.Event, not {pause.until!r}")
        with contextlib.suppress(asyncio.TimeoutError):  # TimeoutError itself from 3.11 on
            await asyncio.wait_for(pause.until.wait(), pause.seconds)
        return pause.until.is_set()

    async def call(self, call: Call[T]) -> T:
        """Send one script call and parse its reply (EVAL with the source on NOSCRIPT)."""
        try:
            reply = await self.client.execute_command(*command_of(call))
        except NoScriptError:
            reply = await self.client.execute_command(*eval_args(call))
        return call.parse(reply)

    async def call_all(self, calls: Sequence[Call[Any] | Command]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order."""
        if len(calls) == 1 and isinstance(calls[0], Call):
            return [await self.call(calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*command_of(call))
        results, missing = parse_replies(calls, await pipe.execute(raise_on_error=False))
        for i in missing:
            results[i] = await self.call(calls[i])  # type: ignore[arg-type]
        return results
