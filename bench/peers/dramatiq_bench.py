"""Dramatiq's adapter (bench/.venvs/dramatiq), on its Redis broker. Single add: ``actor.send``;
bulk: ``group(messages).run()`` (Dramatiq's way to send many; it enqueues them one by one).
Workers: the ``dramatiq`` CLI; ``c1`` is ``--processes 1 --threads 1``, ``best`` is
``--processes 1 --threads N`` (Dramatiq's default is 8 threads per process; run.py passes N),
``p2`` is ``--processes 2 --threads N``."""

from __future__ import annotations

import sys
from typing import Any

import _shared as s
import dramatiq
from dramatiq.brokers.redis import RedisBroker

dramatiq.set_broker(RedisBroker(url=s.url_at_import()))
BODY = s.Body()


def _job(data: dict[str, Any]) -> None:
    BODY(data)


job = dramatiq.actor(_job, actor_name="job", queue_name="bench", max_retries=0)


def enqueue_single(opts: s.Options, n: int) -> None:
    for i in range(n):
        job.send(s.payload(i))


def enqueue_bulk(opts: s.Options, n: int) -> None:
    for start in range(0, n, s.BULK_BATCH):
        dramatiq.group([job.message(s.payload(i))
                        for i in range(start, min(n, start + s.BULK_BATCH))]).run()


def threads(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def processes(opts: s.Options) -> int:
    return s.PROCESSES if opts.setting == "p2" else 1


def settings(opts: s.Options) -> str:
    return f"dramatiq --processes {processes(opts)} --threads {threads(opts)}"


def worker(opts: s.Options) -> list[str]:
    return [sys.executable, "-m", "dramatiq", "dramatiq_bench", "--processes",
            str(processes(opts)), "--threads", str(threads(opts))]


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    return s.send_paced(job.send, rate, seconds)


ADAPTER = s.Adapter(
    name="dramatiq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=enqueue_bulk,
    settings=settings, worker=worker, produce=produce, processes="flag",
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
