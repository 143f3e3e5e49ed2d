"""Huey's adapter (bench/.venvs/huey), ``RedisHuey`` storage with its defaults (results kept).
Single add: calling the task; Huey has no bulk enqueue. Workers: ``huey_consumer``; ``c1`` is
``-k thread -w 1``, ``best`` is ``-k thread -w N`` (one process), ``p2`` is ``-k process -w 2``
(two worker processes)."""

from __future__ import annotations

import sys
from typing import Any

import _shared as s
from huey import RedisHuey

huey = RedisHuey("bench", url=s.url_at_import())
BODY = s.Body()


def _job(data: dict[str, Any]) -> None:
    BODY(data)


job = huey.task(name="job")(_job)


def enqueue_single(opts: s.Options, n: int) -> None:
    for i in range(n):
        job(s.payload(i))


def workers(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def kind(opts: s.Options) -> list[str]:
    if opts.setting == "p2":
        return ["-k", "process", "-w", str(s.PROCESSES)]
    return ["-k", "thread", "-w", str(workers(opts))]


def settings(opts: s.Options) -> str:
    return "huey_consumer " + " ".join(kind(opts))


def worker(opts: s.Options) -> list[str]:
    return [sys.executable, "-m", "huey.bin.huey_consumer", "huey_bench.huey", *kind(opts), "-q"]


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    return s.send_paced(job, rate, seconds)


ADAPTER = s.Adapter(
    name="huey", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=None,
    settings=settings, worker=worker, produce=produce, processes="flag",
)

if __name__ == "__main__":
    # Huey registers a task under its module's name: enqueue through the importable module, so
    # the producer's "huey_bench.job" is the consumer's too (not "__main__.job").
    import huey_bench

    s.main(huey_bench.ADAPTER, sys.argv[1:])
