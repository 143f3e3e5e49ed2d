"""A producer or a worker in its own process, for the clock-skew tests, which run it under
``faketime`` (tests/reliability/test_clock_skew.py):

``python -m tests.skewed_process add URL QUEUE DELAY`` adds one job (payload "skewed") with
``delay`` seconds and prints its id;
``python -m tests.skewed_process work URL QUEUE VISIBILITY_TIMEOUT`` runs a worker until
SIGTERM: each job it runs has its id pushed to ``skew:ran``, then is acked.
"""

from __future__ import annotations

import sys

import redis

from pyqcore import BaseQueue, Job

RAN = "skew:ran"


def main(role: str, url: str, queue_name: str, number: str) -> None:
    client = redis.Redis.from_url(url)
    if role == "add":
        print(BaseQueue(client, name=queue_name).add("skewed", delay=float(number)), flush=True)
        return

    def handler(job: Job) -> None:
        client.rpush(RAN, job.id)

    queue = BaseQueue(client, name=queue_name, handler=handler,
                      visibility_timeout=float(number))
    queue.process(concurrency=1, idle_wait=0.2)


if __name__ == "__main__":
    main(*sys.argv[1:5])
