"""A worker in its own process, for the signal tests:
``python -m tests.worker_process URL VISIBILITY_TIMEOUT single|cluster``.

Its handler pushes the job id to ``started`` and then waits for a ``release:<id>`` key that the
test never sets (SIGKILL case) or sets after SIGTERM (graceful case), then counts ``done``.
"""

from __future__ import annotations

import json
import sys

import redis

from pyqcore import BaseQueue, Job


def main(url: str, visibility_timeout: float, backend: str) -> None:
    client: redis.Redis | redis.RedisCluster = (
        redis.RedisCluster.from_url(url) if backend == "cluster" else redis.Redis.from_url(url))

    def handler(job: Job) -> None:
        client.rpush("test:started", job.id)
        client.blpop([f"test:release:{job.id}"], timeout=60)
        client.incr("test:done")

    queue = BaseQueue(client, name="signals", handler=handler,
                      visibility_timeout=visibility_timeout)
    report = queue.process(concurrency=2, idle_wait=0.2)
    print(json.dumps(report.__dict__), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3])
