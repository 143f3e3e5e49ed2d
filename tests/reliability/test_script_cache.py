"""The script cache emptied at the worst moment, right before each EVALSHA goes out (what a
SCRIPT FLUSH or a restart mid-run can do): every call still succeeds, through EVAL, on both
drivers, for single calls and for pipelined round trips.

The flush is hooked where a command is encoded for the socket (the connection's
``send_command`` and ``pack_commands``; on asyncio ``pack_command``, which both go through),
so it sees what the drivers really send, however they send it; and the server's own counters
(INFO commandstats, errorstats) confirm that every EVALSHA it received missed the cache and
was answered through EVAL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.connection
import redis.connection

import pyqcore.asyncio
from pyqcore import BaseQueue, WorkerReport
from tests.support import LocalRedis


class Flusher:
    """Empties the script cache through a side connection whenever a command holding EVALSHA
    is about to be written; counts the EVALSHAs it saw go out."""

    side: redis.Redis
    evalshas = 0
    flushes = 0

    @classmethod
    def before_sending(cls, commands: Iterable[Iterable[Any]]) -> None:
        names = [bytes(c[0]) if isinstance(c[0], bytes | bytearray | memoryview)
                 else str(c[0]).encode() for c in (list(cmd) for cmd in commands)]
        found = sum(name.upper() == b"EVALSHA" for name in names)
        if found:
            cls.side.script_flush()
            cls.flushes += 1
            cls.evalshas += found


class FlushingConnection(redis.connection.Connection):
    def send_command(self, *args: Any, **kwargs: Any) -> None:
        Flusher.before_sending([args])
        super().send_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def pack_commands(self, commands: Iterable[Any]) -> Any:
        commands = [tuple(c) for c in commands]
        Flusher.before_sending(commands)
        return super().pack_commands(commands)  # type: ignore[no-untyped-call]


class AsyncFlushingConnection(redis.asyncio.connection.Connection):
    def pack_command(self, *args: Any) -> Any:  # pack_commands packs each with this too
        Flusher.before_sending([args])
        return super().pack_command(*args)


def commandstats(server: LocalRedis) -> dict[str, int]:
    """How often the server ran EVALSHA and EVAL, and answered NOSCRIPT."""
    with server.client() as client:
        stats: dict[str, Any] = client.info("commandstats")
        errors: dict[str, Any] = client.info("errorstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {"evalsha": evalsha.get("calls", 0),
            "evalsha_failed": evalsha.get("failed_calls", 0),
            "eval": stats.get("cmdstat_eval", {}).get("calls", 0),
            "noscript": errors.get("errorstat_NOSCRIPT", {}).get("count", 0)}


def exercise_sync(server: LocalRedis) -> tuple[list[str], WorkerReport, dict[str, int]]:
    pool = redis.ConnectionPool(connection_class=FlushingConnection, host="127.0.0.1",
                                port=server.port)
    client = redis.Redis(connection_pool=pool)
    try:
        queue = BaseQueue(client, name="flush", handler=lambda job: None)
        first = queue.add("x")  # one script call
        [job] = queue.reserve()
        assert queue.ack(job) == 1
        ids = queue.add_batch(range(20))
        report = queue.process(burst=True, install_signal_handlers=False)  # pipelined rounds
        return [first, *ids], report, queue.counts()
    finally:
        client.close()
        pool.disconnect()


async def exercise_asyncio(server: LocalRedis) -> tuple[list[str], WorkerReport, dict[str, int]]:
    pool = redis.asyncio.ConnectionPool(connection_class=AsyncFlushingConnection,
                                        host="127.0.0.1", port=server.port)
    client = redis.asyncio.Redis(connection_pool=pool)
    try:
        queue = pyqcore.asyncio.BaseQueue(client, name="flush", handler=lambda job: None)
        first = await queue.add("x")
        [job] = await queue.reserve()
        assert await queue.ack(job) == 1
        ids = await queue.add_batch(range(20))
        report = await queue.process(burst=True, install_signal_handlers=False)
        return [first, *ids], report, await queue.counts()
    finally:
        await client.aclose()
        await pool.disconnect()


@pytest.mark.parametrize("driver", ["sync", "asyncio"])
def test_a_flush_before_every_evalsha_is_survived(plain_server: LocalRedis, driver: str) -> None:
    Flusher.side = plain_server.client()
    Flusher.evalshas = Flusher.flushes = 0
    Flusher.side.config_resetstat()
    try:
        if driver == "sync":
            ids, report, counts = exercise_sync(plain_server)
        else:
            ids, report, counts = asyncio.run(exercise_asyncio(plain_server))
    finally:
        Flusher.side.close()
    assert ids[0] == "1" and len(set(ids)) == 21
    assert report.acked == 20 and report.delivered == 20
    assert counts == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    sent = commandstats(plain_server)
    # The hook saw every EVALSHA the server received, and flushed before each one went out:
    assert Flusher.evalshas >= 6 and Flusher.flushes >= 3, "the flush never came into play"
    assert sent["evalsha"] == Flusher.evalshas
    # ... so each one missed the cache, and the call went through with EVAL instead:
    assert sent["evalsha_failed"] == sent["noscript"] == sent["evalsha"]
    assert sent["eval"] >= 6
