"""The asyncio driver: performs the core's effects (``pyqcore.core.effects``) on a
``redis.asyncio`` client (standalone or cluster), awaited. It sends what the sync driver sends
(``pyqcore.core.driving``), with the same NOSCRIPT -> EVAL and pipeline behaviour."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from pyqcore.core.calls import Call
from pyqcore.core.driving import Driving, command_of, eval_args, parse_replies
from pyqcore.core.effects import Block, Command, Flow, Pause, Turn
from pyqcore.core.failures import raise_typed

T = TypeVar("T")
AsyncClient = redis.asyncio.Redis | RedisCluster


class FutureWaiter(asyncio.Future[None]):
    """The asyncio driver's waiting primitive (``pyqcore.core.effects.Waiter``): a future of
    the running loop (itself: one object less per waiting add), which ``wake`` resolves unless
    its task gave up waiting."""

    __slots__ = ()

    def wake(self) -> None:
        if not self.done():
            self.set_result(None)


class AsyncDriver(Driving):
    """Runs flows on a redis.asyncio client; every method is a coroutine."""

    client: AsyncClient
    new_waiter = FutureWaiter

    def run(self, operation: Call[T] | Flow[T]) -> Coroutine[Any, Any, T]:
        """Perform an operation's effects until it returns: the coroutine of its result.
        (Not itself a coroutine: one layer less for every operation. So its errors are typed,
        ``raise_typed``, in the two coroutines it returns: ``drive`` and ``call``.)"""
        if type(operation) is Call:
            return self.call(operation)
        return self.drive(operation, self.perform)  # type: ignore[arg-type]

    @staticmethod
    async def drive(flow: Flow[T], perform: Callable[[Any], Awaitable[Any]]) -> T:
        """Run ``flow``, awaiting ``perform`` for each effect (its exceptions are thrown back
        into the flow)."""
        send = flow.send
        try:
            effect = send(None)
            while True:
                try:
                    value = await perform(effect)
                except BaseException as exc:  # a cancellation too, so the flow can clean up
                    effect = flow.throw(exc)
                else:
                    effect = send(value)
        except StopIteration as done:
            result: T = done.value
            return result
        except Exception as exc:  # what the flow let through (see run)
            raise_typed(exc)

    async def call(self, call: Call[T]) -> T:
        """Send one script call and parse its reply; an error reply the call reads
        (``Call.on_error``) is its result, any other error is raised typed. Then its
        ``done``, if it has one, whatever happened (a cancellation too)."""
        try:
            try:
                try:
                    reply = await self.client.execute_command(*command_of(call))
                except NoScriptError:
                    reply = await self.client.execute_command(*eval_args(call))
            except Exception as exc:  # a bare call's error (see run), or one the call reads
                if call.on_error is None or not isinstance(exc, ResponseError):
                    raise_typed(exc)
                return call.on_error(exc)
            return call.parse(reply)
        finally:
            if call.done is not None:
                call.done()

    async def call_all(self, calls: Sequence[Call[Any] | Command]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order."""
        if len(calls) == 1 and isinstance(calls[0], Call):
            return [await self.call(calls[0])]
        replies = await self.pipeline_of(calls).execute(raise_on_error=False)
        results, missing = parse_replies(calls, replies)
        for i, call in missing:
            results[i] = await self.call(call)
        return results

    async def command(self, command: Command) -> Any:
        """Send one plain command and parse its reply. On a cluster, a ``target_nodes`` node
        flag ("primaries", ...) is resolved to its nodes here (see ``nodes_of``)."""
        options = command.options
        target = options.get("target_nodes")
        if isinstance(self.client, RedisCluster) and isinstance(target, str):
            options = {**options, "target_nodes": await nodes_of(self.client, target)}
        return command.parse(await self.client.execute_command(*command.args, **options))

    async def block(self, block: Block) -> Any:
        """BLPOP on the wake lists."""
        return await self.client.blpop(block.keys, block.timeout)

    @staticmethod
    def turn(turn: Turn) -> FutureWaiter:
        """What to await until another task wakes the waiter (a coalesced add's turn): the
        waiter itself, a future (no coroutine per waiting add)."""
        if not isinstance(turn.waiter, FutureWaiter):
            raise TypeError(f"the asyncio driver waits on a FutureWaiter, not {turn.waiter!r}")
        return turn.waiter

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


async def nodes_of(client: RedisCluster, flag: str) -> list[ClusterNode]:
    """The nodes a node flag names. redis.asyncio's RedisCluster (redis-py 8.1) honours a flag
    as ``target_nodes`` only until the client is initialized; once it has served a command it
    routes a keyless command (CONFIG GET) by its keys anyway, and raises RedisClusterException
    ("Missing key"): so the first call of a queue on an already used cluster client failed."""
    await client.initialize()  # a no-op once initialized
    nodes: dict[str, Callable[[], list[ClusterNode]]] = {
        RedisCluster.PRIMARIES: client.get_primaries,
        RedisCluster.REPLICAS: client.get_replicas,
        RedisCluster.ALL_NODES: client.get_nodes,
        RedisCluster.RANDOM: lambda: [client.get_random_node()],
        RedisCluster.DEFAULT_NODE: lambda: [client.get_default_node()],
    }
    if flag not in nodes:
        raise ValueError(f"{flag!r} is not a node flag of RedisCluster ({sorted(nodes)})")
    return nodes[flag]()
