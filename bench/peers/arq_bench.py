"""arq's adapter (bench/.venvs/arq). Single add: ``ArqRedis.enqueue_job``; arq has no bulk API;
concurrent adds: a gather of ``enqueue_job``; no multi-process worker.
Workers (asyncio, one process): ``c1`` is ``Worker(max_jobs=1)``, ``best`` is
``Worker(max_jobs=N, poll_delay=0.05)`` (max_jobs defaults to 10, run.py passes N). arq polls
its queue every ``poll_delay`` (0.5 s by default), which caps ``c1`` near 2 jobs/s; ``best``
lowers it to 0.05 s (our tuning, not an arq recommendation)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import _shared as s
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker

BODY = s.AsyncBody()


async def job(ctx: dict[str, Any], data: dict[str, Any]) -> None:
    await BODY(data)


async def pool(opts: s.Options) -> ArqRedis:
    return await create_pool(RedisSettings.from_dsn(opts.url))


def enqueue_single(opts: s.Options, n: int) -> None:
    async def go() -> None:
        redis = await pool(opts)
        for i in range(n):
            await redis.enqueue_job("job", s.payload(i))
        await redis.aclose()

    asyncio.run(go())


def enqueue_concurrent(opts: s.Options, n: int) -> None:
    async def go() -> None:
        redis = await pool(opts)
        await s.gathered(lambda p: redis.enqueue_job("job", p), n)
        await redis.aclose()

    asyncio.run(go())


def prefill(opts: s.Options, n: int) -> None:
    """Untimed: 100 concurrent enqueues at a time."""
    async def go() -> None:
        redis = await pool(opts)
        for start in range(0, n, 100):
            await asyncio.gather(*(redis.enqueue_job("job", s.payload(i))
                                   for i in range(start, min(n, start + 100))))
        await redis.aclose()

    asyncio.run(go())


def max_jobs(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def poll_delay(opts: s.Options) -> float:
    return 0.5 if opts.setting == "c1" else 0.05


def settings(opts: s.Options) -> str:
    return f"Worker(max_jobs={max_jobs(opts)}, poll_delay={poll_delay(opts)})"


def run_worker(opts: s.Options) -> None:
    Worker(functions=[job], redis_settings=RedisSettings.from_dsn(opts.url),
           max_jobs=max_jobs(opts), poll_delay=poll_delay(opts)).run()


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    async def go() -> int:
        redis = await pool(opts)
        sent = await s.send_paced_async(lambda p: redis.enqueue_job("job", p), rate, seconds)
        await redis.aclose()
        return sent

    return asyncio.run(go())


ADAPTER = s.Adapter(
    name="arq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=None,
    settings=settings, run_worker=run_worker, produce=produce, prefill=prefill,
    enqueue_concurrent=enqueue_concurrent,
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
