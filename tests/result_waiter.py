"""Waits for one job's result in its own process, for the results tests:
``python -m tests.result_waiter URL single|cluster sync|asyncio QUEUE JOB_ID TIMEOUT``.

Prints one JSON line: ``{"result": value}``, or ``{"error": "<type>", "message": ...}`` for
what ``queue.result`` raised. The queue keeps results (``store_results``) for 60 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster

import pyqcore.asyncio
from pyqcore import BaseQueue, PyqcoreError

OPTIONS: dict[str, Any] = {"keep_completed": 60, "store_results": True}


def wait_sync(url: str, backend: str, queue: str, job_id: str, timeout: float) -> Any:
    client: redis.Redis | redis.RedisCluster = (
        redis.RedisCluster.from_url(url) if backend == "cluster" else redis.Redis.from_url(url))
    return BaseQueue(client, name=queue, **OPTIONS).result(job_id, timeout=timeout)


async def wait_asyncio(url: str, backend: str, queue: str, job_id: str, timeout: float) -> Any:
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster = (
        redis.asyncio.cluster.RedisCluster.from_url(url) if backend == "cluster"
        else redis.asyncio.Redis.from_url(url))
    try:
        return await pyqcore.asyncio.BaseQueue(client, name=queue, **OPTIONS).result(
            job_id, timeout=timeout)
    finally:
        await client.aclose()


def main(argv: list[str]) -> None:
    url, backend, driver, queue, job_id, timeout = argv
    try:
        if driver == "asyncio":
            value = asyncio.run(wait_asyncio(url, backend, queue, job_id, float(timeout)))
        else:
            value = wait_sync(url, backend, queue, job_id, float(timeout))
    except PyqcoreError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        return
    print(json.dumps({"result": value}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
