"""Celery's adapter (bench/.venvs/celery), Redis as the broker, no result backend. Single add:
``task.delay``; bulk: ``group(signatures).apply_async()`` (Celery's way to send many).
Workers: ``celery worker`` (``--pool solo`` for ``c1``, ``--pool threads --concurrency N`` for
``best``, both one process; ``--pool prefork --concurrency 2`` for ``p2``: two child
processes), mingle, gossip and heartbeats off, default prefetch (4 per slot) and early acks
(Celery's defaults)."""

from __future__ import annotations

import sys
from typing import Any

import _shared as s
from celery import Celery, group

app = Celery("celery_bench", broker=s.url_at_import())
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)
BODY = s.Body()


def _job(data: dict[str, Any]) -> None:
    BODY(data)


job = app.task(name="job")(_job)


def enqueue_single(opts: s.Options, n: int) -> None:
    for i in range(n):
        job.delay(s.payload(i))


def enqueue_bulk(opts: s.Options, n: int) -> None:
    for start in range(0, n, s.BULK_BATCH):
        group(job.s(s.payload(i)) for i in range(start, min(n, start + s.BULK_BATCH))).apply_async()


def pool(opts: s.Options) -> list[str]:
    if opts.setting == "c1":
        return ["--pool", "solo"]
    if opts.setting == "p2":
        return ["--pool", "prefork", "--concurrency", str(s.PROCESSES)]
    return ["--pool", "threads", "--concurrency", str(opts.concurrency)]


def settings(opts: s.Options) -> str:
    return "celery worker " + " ".join(pool(opts))


def worker(opts: s.Options) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "celery_bench", "worker", *pool(opts),
            "--loglevel", "WARNING", "--without-mingle", "--without-gossip",
            "--without-heartbeat"]


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    return s.send_paced(job.delay, rate, seconds)


ADAPTER = s.Adapter(
    name="celery", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=enqueue_bulk,
    settings=settings, worker=worker, produce=produce, processes="flag",
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
