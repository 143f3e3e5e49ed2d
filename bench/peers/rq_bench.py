"""RQ's adapter (bench/.venvs/rq). Single add: ``Queue.enqueue``; bulk: ``Queue.enqueue_many``
with ``Queue.prepare_data`` (one pipeline per 1,000). Workers (RQ runs one job at a time per
worker process): ``c1`` is the default ``Worker`` (forks a work horse per job; RQ's production
advice), ``best`` is ``SimpleWorker`` (no fork; RQ's performance notes call it the fast one),
``p2`` is two ``SimpleWorker`` processes."""

from __future__ import annotations

import sys

import _shared as s
from rq import Queue, SimpleWorker, Worker

QUEUE = "bench"
BODY = s.Body()


def job(data: dict[str, object]) -> None:
    BODY(data)


def queue(opts: s.Options) -> Queue:
    return Queue(QUEUE, connection=s.client(opts.url))


def enqueue_single(opts: s.Options, n: int) -> None:
    q = queue(opts)
    for i in range(n):
        q.enqueue("rq_bench.job", s.payload(i))


def enqueue_bulk(opts: s.Options, n: int) -> None:
    q = queue(opts)
    for start in range(0, n, s.BULK_BATCH):
        q.enqueue_many([Queue.prepare_data("rq_bench.job", (s.payload(i),))
                        for i in range(start, min(n, start + s.BULK_BATCH))])


def settings(opts: s.Options) -> str:
    if opts.setting == "p2":
        return f"{s.PROCESSES} SimpleWorker processes (no fork)"
    return "Worker (fork per job)" if opts.setting == "c1" else "SimpleWorker (no fork)"


def run_worker(opts: s.Options) -> None:
    cls = Worker if opts.setting == "c1" else SimpleWorker
    cls([queue(opts)], connection=s.client(opts.url)).work(logging_level="WARNING")


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    q = queue(opts)
    return s.send_paced(lambda payload: q.enqueue("rq_bench.job", payload), rate, seconds)


ADAPTER = s.Adapter(
    name="rq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=enqueue_bulk,
    settings=settings, run_worker=run_worker, produce=produce, processes="copies",
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
