"""pyqcore's adapter (runs in pyqcore's own venv, .venv), plus the pyqcore-only figures: the
empty-body drain, Redis memory per waiting job, Redis CPU and commands per job life cycle.

Worker settings: ``c1`` is ``process(concurrency=1)``; ``best`` is ``process(concurrency=N)``
(``--concurrency``, run.py passes 2): each of the N slot threads acks its finished batch and
leases the next in one round trip, batches growing to ~0.1 s of work (up to 100 jobs), so a
round trip is shared by many jobs; more threads than cores only add GIL hand-offs. ``batch``
is ``process(concurrency=2, prefetch=1000)`` with a batch handler: the same body, one INCR per
job, sent for the whole leased batch in one pipeline (a pyqcore-only row, reported apart from
the others); two slots let one batch's round trips overlap the other's Python work.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _shared as s

from pyqcore import BaseQueue, Job

QUEUE = "bench"
BATCH_SLOTS, BATCH_PREFETCH = 2, 1000  # the batch handler's setting


def queue(opts: s.Options, handler: Any = None, batch_handler: Any = None) -> BaseQueue:
    if batch_handler is not None:
        return BaseQueue(s.client(opts.url), name=QUEUE, batch_handler=batch_handler)
    return BaseQueue(s.client(opts.url), name=QUEUE, handler=handler or (lambda job: None))


def enqueue_single(opts: s.Options, n: int) -> None:
    q = queue(opts)
    for i in range(n):
        q.add(s.payload(i))


def enqueue_bulk(opts: s.Options, n: int) -> None:
    q = queue(opts)
    for start in range(0, n, s.BULK_BATCH):
        q.add_batch([s.payload(i) for i in range(start, min(n, start + s.BULK_BATCH))])


def concurrency(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def settings(opts: s.Options) -> str:
    if opts.setting == "batch":
        return (f"process(concurrency={BATCH_SLOTS}, prefetch={BATCH_PREFETCH}), batch_handler: "
                "one pipeline of INCRs per batch")
    return f"process(concurrency={concurrency(opts)})"


def run_worker(opts: s.Options) -> None:
    body = s.Body()

    def handle(job: Job) -> None:
        body(job.payload)

    def handle_batch(jobs: list[Job]) -> None:
        pipe = body.redis.pipeline(transaction=False)
        for _ in jobs:
            pipe.incr(s.COUNTER)
        for n in pipe.execute():
            body.after_incr(int(n))

    if opts.setting == "batch":
        queue(opts, batch_handler=handle_batch).process(  # until SIGTERM
            concurrency=BATCH_SLOTS, prefetch=BATCH_PREFETCH)
    else:
        queue(opts, handle).process(concurrency=concurrency(opts))


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    return s.send_paced(queue(opts).add, rate, seconds)


def drain_empty(opts: s.Options) -> s.Result:
    """Pure queue overhead: N jobs with an empty body, drained in this process (burst)."""
    enqueue_bulk(opts, opts.jobs)
    q = queue(opts)
    start = time.perf_counter()
    report = q.process(concurrency=concurrency(opts), burst=True, install_signal_handlers=False)
    seconds = time.perf_counter() - start
    if report.acked != opts.jobs:
        return {"ok": False, "error": f"acked {report.acked} of {opts.jobs}"}
    return {"ok": True, "seconds": seconds, "jobs": opts.jobs, "setting": settings(opts)}


def memory(opts: s.Options) -> s.Result:
    """``used_memory`` delta over ``--jobs`` waiting jobs (added in batches of 1,000)."""
    r = s.client(opts.url)
    before = int(s.info(r, "memory")["used_memory"])
    enqueue_bulk(opts, opts.jobs)
    after = int(s.info(r, "memory")["used_memory"])
    record = len(queue(opts).serializer.dumps([s.payload(opts.jobs // 2), None, 0]))
    return {"ok": True, "bytes_per_job": (after - before) / opts.jobs, "jobs": opts.jobs,
            "record_bytes": record}


def redis_cpu(opts: s.Options) -> s.Result:
    """Redis's own cost of a job life cycle, batched: add_batch (1,000), reserve(100), ack(100).

    From INFO around the run (after CONFIG RESETSTAT): the scripts' run time (``usec`` of the
    evalsha line, which includes the commands the script runs), the server process's CPU
    (``used_cpu_user + used_cpu_sys``, with networking and parsing), and commands per job (the
    evalsha calls plus the commands the scripts ran, each its own commandstats line)."""
    r = s.client(opts.url)
    q = queue(opts)
    payloads = [s.payload(i) for i in range(opts.jobs)]
    r.config_resetstat()
    cpu = s.cpu_seconds(r)
    for start in range(0, opts.jobs, s.BULK_BATCH):
        q.add_batch(payloads[start : start + s.BULK_BATCH])
    done = 0
    while done < opts.jobs:
        jobs = q.reserve(count=100)
        if not jobs:
            break
        done += q.ack(jobs)
    cpu = s.cpu_seconds(r) - cpu
    stats = s.command_stats(r)
    calls = {k: int(v["calls"]) for k, v in sorted(stats.items())}
    script_usec = sum(int(v["usec"]) for k, v in stats.items() if k.startswith("eval"))
    return {"ok": done == opts.jobs, "jobs": done, "script_usec_per_job": script_usec / done,
            "process_usec_per_job": cpu * 1e6 / done,
            "commands_per_job": sum(calls.values()) / done, "calls": calls}


ADAPTER = s.Adapter(
    name="pyqcore", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=enqueue_bulk,
    settings=settings, run_worker=run_worker, produce=produce,
    extra={"drain-empty": drain_empty, "memory": memory, "redis-cpu": redis_cpu},
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
