"""streaq's adapter (bench/.venvs/streaq; asyncio on Redis streams). Single add:
``await task.enqueue(...)``; bulk: ``Worker.enqueue_many`` (one pipeline per 1,000);
concurrent adds: a gather of ``task.enqueue(...)``; no multi-process worker. Workers:
``Worker.run_sync`` in one process; ``c1`` is ``Worker(concurrency=1)``, ``best`` is
``Worker(concurrency=N)`` (default 16; run.py passes N)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import _shared as s
from streaq import Worker


def concurrency() -> int:
    return int(os.environ.get("BENCH_CONCURRENCY", "16"))


worker = Worker(redis_url=s.url_at_import(), queue_name="bench", concurrency=concurrency())
BODY = s.AsyncBody()


async def _job(data: dict[str, Any]) -> None:
    await BODY(data)


job = worker.task(name="job")(_job)


def enqueue_single(opts: s.Options, n: int) -> None:
    async def go() -> None:
        async with worker:
            for i in range(n):
                await job.enqueue(s.payload(i))

    asyncio.run(go())


def enqueue_bulk(opts: s.Options, n: int) -> None:
    async def go() -> None:
        async with worker:
            for start in range(0, n, s.BULK_BATCH):
                await worker.enqueue_many([job.enqueue(s.payload(i))
                                           for i in range(start, min(n, start + s.BULK_BATCH))])

    asyncio.run(go())


def enqueue_concurrent(opts: s.Options, n: int) -> None:
    async def go() -> None:
        async with worker:
            await s.gathered(job.enqueue, n)

    asyncio.run(go())


def tasks(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def settings(opts: s.Options) -> str:
    return f"Worker(concurrency={tasks(opts)})"


def worker_command(opts: s.Options) -> list[str]:
    os.environ["BENCH_CONCURRENCY"] = str(tasks(opts))  # inherited by the worker process
    return [sys.executable, "-c", "import streaq_bench; streaq_bench.worker.run_sync()"]


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    async def go() -> int:
        async with worker:
            return await s.send_paced_async(job.enqueue, rate, seconds)

    return asyncio.run(go())


ADAPTER = s.Adapter(
    name="streaq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=enqueue_bulk,
    settings=settings, worker=worker_command, produce=produce,
    enqueue_concurrent=enqueue_concurrent,
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
