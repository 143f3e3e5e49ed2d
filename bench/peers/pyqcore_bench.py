"""pyqcore's adapter (runs in pyqcore's own venv, .venv), plus the pyqcore-only figures: the
empty-body drain, Redis memory per waiting job, Redis CPU and commands per job life cycle.

Worker settings: ``c1`` is ``process(concurrency=1)``; ``best`` is ``process(concurrency=N)``
(``--concurrency``, run.py passes 2): each of the N slot threads acks its finished batch and
leases the next in one round trip, batches growing to ~0.1 s of work (up to 100 jobs), so a
round trip is shared by many jobs; more threads than cores only add GIL hand-offs. ``batch``
is ``process(concurrency=2, prefetch=1000)`` with a batch handler: the same body, one INCR per
job, sent for the whole leased batch in one pipeline (a pyqcore-only row, reported apart from
the others); two slots let one batch's round trips overlap the other's Python work. ``p2`` is
``pyqcore worker pyqcore_app:manager --processes 2 --concurrency N`` (``P2_SLOTS``): two worker
processes under pyqcore's supervisor.

Concurrent adds (``enqueue-concurrent``): ``asyncio.gather`` of 1,000 ``await queue.add(...)``
on ``pyqcore.asyncio`` over a default ``redis.asyncio.Redis`` (a pool of 100 connections),
repeated, in alternating blocks with ``add_batch`` of the same payloads on the same loop and
client (so the two rates share the machine's drift); then threads sharing one sync queue.
``single-vs-bare``: one add per round trip against the bare three-command Lua add, in
alternating blocks (as bench/limits.py), with Redis's time per call of each.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import _shared as s
import redis.asyncio

import pyqcore.asyncio
from pyqcore import BaseQueue, Job

QUEUE = "bench"
BATCH_SLOTS, BATCH_PREFETCH = 2, 1000  # the batch handler's setting
# Slots per process with two processes. The INCR body waits on a round trip per job, and with
# a process per core each process's slots overlap those waits: 4 a process drained faster
# than 1 or 2 in every alternating run of bench/limits.py --only processes (30 Nov, 3 runs:
# +5% to +32% over 1 slot; 8 slots alike to 4). The CLI's default stays one slot per core
# (the right one for a CPU-bound handler, what --processes is for).
P2_SLOTS = 4
THREADS = 8  # threads sharing one sync queue in the concurrent-add workload
BARE_BLOCK = 2000  # adds per timed block of single-vs-bare
# The least a numbered, idempotent, counted add can run: HINCRBY + HSETNX + RPUSH, with the
# enqueue script's five KEYS (ready, delayed, jobs, stats, wake) and no checks.
THREE_COMMANDS = """local id = redis.call('HINCRBY', KEYS[4], 'added', 1)
redis.call('HSETNX', KEYS[3], id, ARGV[1])
redis.call('RPUSH', KEYS[1], id)
return id"""


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
    if opts.setting == "p2":
        return f"pyqcore worker --processes {s.PROCESSES} --concurrency {P2_SLOTS}"
    if opts.setting == "batch":
        return (f"process(concurrency={BATCH_SLOTS}, prefetch={BATCH_PREFETCH}), batch_handler: "
                "one pipeline of INCRs per batch")
    return f"process(concurrency={concurrency(opts)})"


def worker(opts: s.Options) -> list[str] | None:
    """The multi-process setting runs pyqcore's own command; the others run_worker."""
    if opts.setting != "p2":
        return None
    return [sys.executable, "-m", "pyqcore", "worker", "pyqcore_app:manager", "--processes",
            str(s.PROCESSES), "--concurrency", str(P2_SLOTS), "--log-level", "warning"]


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


def enqueue_concurrent(opts: s.Options) -> s.Result:
    """Gather of ``CONCURRENT`` adds on pyqcore.asyncio, repeated to ``--jobs``, alternating
    with add_batch blocks of the same size; then ``THREADS`` threads sharing a sync queue."""
    payloads = [s.payload(i) for i in range(opts.jobs)]

    async def go() -> tuple[float, float]:
        client = redis.asyncio.Redis.from_url(opts.url)  # the default pool: 100 connections
        adds = pyqcore.asyncio.BaseQueue(client, name=QUEUE)
        bulk = pyqcore.asyncio.BaseQueue(client, name="bench-bulk")
        gathered = batched = 0.0
        for start in range(0, opts.jobs, s.CONCURRENT):
            block = payloads[start : start + s.CONCURRENT]
            began = time.perf_counter()
            await asyncio.gather(*(adds.add(p) for p in block))
            gathered += time.perf_counter() - began
            began = time.perf_counter()
            await bulk.add_batch(block)
            batched += time.perf_counter() - began
        await client.aclose()
        return gathered, batched

    gathered, batched = asyncio.run(go())
    shared = queue(opts)
    per_thread = opts.jobs // THREADS

    def produce_part(part: int) -> None:
        for p in payloads[part * per_thread : (part + 1) * per_thread]:
            shared.add(p)

    threads = [threading.Thread(target=produce_part, args=(i,)) for i in range(THREADS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threaded = time.perf_counter() - began
    return {"ok": True, "seconds": gathered, "jobs": opts.jobs,
            "setting": f"asyncio.gather of {s.CONCURRENT:,} adds",
            "add_batch_seconds": batched, "threads": THREADS,
            "threads_seconds": threaded, "threads_jobs": per_thread * THREADS}


def single_vs_bare(opts: s.Options, blocks: int = 7) -> s.Result:
    """One add per round trip, pyqcore's against the bare three-command script, in alternating
    blocks of ``BARE_BLOCK``: median µs per add and Redis µs per EVALSHA of each."""
    r = s.client(opts.url)
    bare_sha = r.script_load(THREE_COMMANDS)
    keys = [f"{{bare}}:{k}" for k in ("ready", "delayed", "jobs", "stats", "wake")]
    q = queue(opts)
    q.add(s.payload(0))  # announces the queue; loads the script
    variants: dict[str, Callable[[int], object]] = {
        "bare": lambda i: r.evalsha(bare_sha, 5, *keys, json.dumps(s.payload(i))),
        "pyqcore": lambda i: q.add(s.payload(i)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    usec: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks):
        for name, call in variants.items():
            r.config_resetstat()
            began = time.perf_counter()
            for i in range(BARE_BLOCK):
                call(i)
            times[name].append((time.perf_counter() - began) / BARE_BLOCK * 1e6)
            stats = s.command_stats(r).get("evalsha", {})
            usec[name].append(float(stats.get("usec_per_call", 0.0)))
    result: s.Result = {"ok": True, "blocks": blocks, "block": BARE_BLOCK}
    for name in variants:
        result[f"{name}_us"] = statistics.median(times[name])
        result[f"{name}_redis_us"] = statistics.median(usec[name])
    return result


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
    settings=settings, run_worker=run_worker, worker=worker, produce=produce, processes="flag",
    extra={"drain-empty": drain_empty, "memory": memory, "redis-cpu": redis_cpu,
           "enqueue-concurrent": enqueue_concurrent, "single-vs-bare": single_vs_bare},
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
