"""A worker in its own process, for the signal tests:
``python -m tests.worker_process URL VISIBILITY_TIMEOUT single|cluster sync|asyncio``.

Its handler pushes the job id to ``started`` and then waits for a ``release:<id>`` key that the
test never sets (SIGKILL case) or sets after SIGTERM (graceful case), then counts ``done``.
pyqcore's log goes to stderr (INFO), where the graceful case reads that the stop request was
taken (only then may it release the jobs: a job released sooner could let its slot start
another before the signal is handled). On
the sync driver the handler is a plain function and the worker installs its signal handlers
with ``signal.signal``; on asyncio it is an ``async def`` on a ``redis.asyncio`` client and the
worker installs them on the running loop (``loop.add_signal_handler``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import redis
import redis.asyncio
import redis.asyncio.cluster

import pyqcore.asyncio
from pyqcore import BaseQueue, Job, WorkerReport


def run_sync(url: str, visibility_timeout: float, backend: str) -> WorkerReport:
    client: redis.Redis | redis.RedisCluster = (
        redis.RedisCluster.from_url(url) if backend == "cluster" else redis.Redis.from_url(url))

    def handler(job: Job) -> None:
        client.rpush("test:started", job.id)
        client.blpop([f"test:release:{job.id}"], timeout=60)
        client.incr("test:done")

    queue = BaseQueue(client, name="signals", handler=handler,
                      visibility_timeout=visibility_timeout)
    return queue.process(concurrency=2, idle_wait=0.2)


async def run_asyncio(url: str, visibility_timeout: float, backend: str) -> WorkerReport:
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = (
        redis.asyncio.cluster.RedisCluster.from_url(url) if backend == "cluster"
        else redis.asyncio.Redis.from_url(url))

    async def handler(job: Job) -> None:
        await client.rpush("test:started", job.id)
        await client.blpop([f"test:release:{job.id}"], timeout=60)
        await client.incr("test:done")

    queue = pyqcore.asyncio.BaseQueue(client, name="signals", handler=handler,
                                      visibility_timeout=visibility_timeout)
    try:
        return await queue.process(concurrency=2, idle_wait=0.2)
    finally:
        await client.aclose()


def main(url: str, visibility_timeout: float, backend: str, driver: str) -> None:
    if driver == "asyncio":
        report = asyncio.run(run_asyncio(url, visibility_timeout, backend))
    else:
        report = run_sync(url, visibility_timeout, backend)
    print(json.dumps(report.__dict__), flush=True)


if __name__ == "__main__":
    logging.getLogger("pyqcore").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("pyqcore").setLevel(logging.INFO)
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4])
