"""SAQ's adapter (bench/.venvs/saq). Single add: ``Queue.enqueue``; SAQ has no bulk enqueue
(``Queue.map`` enqueues concurrently and then waits for the results); concurrent adds: a
gather of ``Queue.enqueue``. No multi-process worker. Workers (asyncio, one
process): ``c1`` is ``Worker(concurrency=1)``, ``best`` is ``Worker(concurrency=N)`` (default
10; run.py passes N), started as ``saq.worker.start`` does."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import _shared as s
from saq import Queue, Worker

BODY = s.AsyncBody()


async def job(ctx: Any, *, data: dict[str, Any]) -> None:
    await BODY(data)


async def connected(opts: s.Options) -> Queue:
    queue = Queue.from_url(opts.url, name="bench")
    await queue.connect()
    return queue


def enqueue_single(opts: s.Options, n: int) -> None:
    async def go() -> None:
        queue = await connected(opts)
        for i in range(n):
            await queue.enqueue("job", data=s.payload(i))
        await queue.disconnect()

    asyncio.run(go())


def enqueue_concurrent(opts: s.Options, n: int) -> None:
    async def go() -> None:
        queue = await connected(opts)
        await s.gathered(lambda p: queue.enqueue("job", data=p), n)
        await queue.disconnect()

    asyncio.run(go())


def prefill(opts: s.Options, n: int) -> None:
    """Untimed: 100 concurrent enqueues at a time."""
    async def go() -> None:
        queue = await connected(opts)
        for start in range(0, n, 100):
            await asyncio.gather(*(queue.enqueue("job", data=s.payload(i))
                                   for i in range(start, min(n, start + 100))))
        await queue.disconnect()

    asyncio.run(go())


def concurrency(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def settings(opts: s.Options) -> str:
    return f"Worker(concurrency={concurrency(opts)})"


def run_worker(opts: s.Options) -> None:
    async def go() -> None:
        queue = await connected(opts)
        try:
            await Worker(queue, functions=[job], concurrency=concurrency(opts)).start()
        finally:
            await queue.disconnect()

    asyncio.run(go())


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    async def go() -> int:
        queue = await connected(opts)
        sent = await s.send_paced_async(lambda p: queue.enqueue("job", data=p), rate, seconds)
        await queue.disconnect()
        return sent

    return asyncio.run(go())


ADAPTER = s.Adapter(
    name="saq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=None,
    settings=settings, run_worker=run_worker, produce=produce, prefill=prefill,
    enqueue_concurrent=enqueue_concurrent,
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
