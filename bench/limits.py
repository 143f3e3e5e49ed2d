"""Where pyqcore's time goes, against the least any Redis client or script could spend: the
limits behind the targets that run.py reports as missed.

    python bench/limits.py [--url URL] [--blocks N] [--only single,gather,...]

- single add: one round trip each, in alternating blocks so drift hits every variant alike:
  redis-py LPUSH, EVALSHA of a one-line LPUSH script, EVALSHA of the three commands a
  numbered add needs (HINCRBY, HSETNX, RPUSH, with the enqueue script's five KEYS; no checks),
  and pyqcore's add; with the Redis time of each call (commandstats), which shows what one
  redis.call costs;
- Redis CPU per job life cycle (add in batches of 1,000, reserve and ack in batches of 100),
  as Redis's own command time (INFO commandstats): the data-structure work as plain commands,
  the same commands inside three bare Lua scripts (no checks, no counters, ids from the
  client), and pyqcore, in alternating runs: what crossing into Lua costs by itself;
- drain with a batch handler: pyqcore's own share (a no-op batch handler), the body's share
  (redis-py INCR pipelined 1,000 at a time, and one round trip at a time), and the drain of
  run.py's batch setting, so the drain's bound is the sum of the two shares;
- concurrent adds (a gather of 1,000): what asyncio itself costs per task (a gather of tasks
  that each await one shared future, and a future each, with no Redis at all), pyqcore's
  client cost (its gather on a client that answers at once), the gather on Redis and
  add_batch of the same jobs, alternating: the gather cannot beat asyncio's cost plus
  add_batch's, and the target's budget per caller is set against asyncio's own cost;
- concurrent adds from threads: what a thread's wake-up costs (threads in a ring of locks),
  8 threads sharing a sync queue (run.py's workload) and the sync add_batch, alternating;
- two worker processes: drains at one process (run.py's best setting, 1 and 2 slots) and two
  (``--processes 2`` with 1, 2 and 4 slots each), with the CPU the worker processes, Redis and
  everything else on the machine used meanwhile (/proc, INFO cpu), and per job: the worker's
  and Redis's CPU µs, whose sum bounds what 2 cores can drain.

Writes the tables to bench/results/limits.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "bench" / "peers"))  # the adapters whose figures this explains

import _shared as s  # noqa: E402
import pyqcore_bench  # noqa: E402
import redispy_bench  # noqa: E402

import pyqcore.asyncio  # noqa: E402
from pyqcore import BaseQueue, Job  # noqa: E402
from tests.support import LocalRedis  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "limits.md"
BLOCK = 2_000  # calls per timed block
DRAIN_JOBS = 20_000
BATCH_SLOTS, BATCH_PREFETCH = 2, 1000  # run.py's batch-handler setting (peers/pyqcore_bench.py)

ONE_LINE = "return redis.call('LPUSH', KEYS[1], ARGV[1])"
BARE_KEYS = [f"{{l}}:{k}" for k in ("ready", "delayed", "jobs", "stats", "wake")]


LIFE_JOBS = 20_000  # jobs per life-cycle run
BARE_ADD = """redis.call('HSET', KEYS[2], unpack(ARGV))
local ids = {}
for i = 1, #ARGV, 2 do
  ids[(i + 1) / 2] = ARGV[i]
end
return redis.call('RPUSH', KEYS[1], unpack(ids))"""
BARE_RESERVE = """local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if not ids then
  return {}
end
local records = redis.call('HMGET', KEYS[2], unpack(ids))
local lease, reply = {}, {}
for i, id in ipairs(ids) do
  lease[2 * i - 1] = ARGV[2]
  lease[2 * i] = ARGV[3] .. ':' .. id
  reply[2 * i - 1] = id
  reply[2 * i] = records[i]
end
redis.call('ZADD', KEYS[3], unpack(lease))
return reply"""
BARE_ACK = """local n = #ARGV / 2
redis.call('ZREM', KEYS[1], unpack(ARGV, n + 1))
return redis.call('HDEL', KEYS[2], unpack(ARGV, 1, n))"""


def evalsha_usec(r: redis.Redis) -> float:
    """Redis's own time per EVALSHA since the last CONFIG RESETSTAT (commands inside included)."""
    stats: dict[str, Any] = r.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0))


def single_add(r: redis.Redis, blocks: int) -> list[str]:
    """Median µs per call of each variant over rounds of short alternating blocks, the median
    of each round's ratios to LPUSH and to the bare script (a load swing hits a round's blocks
    alike), and the Redis time per EVALSHA."""
    one_line, three = r.script_load(ONE_LINE), r.script_load(pyqcore_bench.THREE_COMMANDS)
    queue = BaseQueue(r, name="limits")
    variants: dict[str, Callable[[int], object]] = {
        LPUSH: lambda i: r.lpush("limits:list", json.dumps(s.payload(i))),
        "EVALSHA, one-line LPUSH script": lambda i: r.evalsha(
            one_line, 1, "limits:list", json.dumps(s.payload(i))),
        BARE: lambda i: r.evalsha(three, 5, *BARE_KEYS, json.dumps(s.payload(i))),
        "pyqcore add": lambda i: queue.add(s.payload(i)),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    server: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks * SINGLE_ROUNDS):
        for name, call in variants.items():
            r.config_resetstat()
            start = time.perf_counter()
            for i in range(SINGLE_BLOCK):
                call(i)
            times[name].append((time.perf_counter() - start) / SINGLE_BLOCK * 1e6)
            server[name].append(evalsha_usec(r))
    r.flushall()
    rows = ["| one add, one round trip | µs/add | LPUSH ÷ this | bare script ÷ this | "
            "Redis µs per EVALSHA |", "|---|---:|---:|---:|---:|"]
    for name in variants:
        to_lpush = statistics.median(f / t for f, t in zip(times[LPUSH], times[name], strict=True))
        to_bare = statistics.median(b / t for b, t in zip(times[BARE], times[name], strict=True))
        redis_us = statistics.median(server[name])
        rows.append(f"| {name} | {statistics.median(times[name]):.1f} | {to_lpush:.0%} | "
                    f"{to_bare:.0%} | {f'{redis_us:.1f}' if redis_us else '—'} |")
    return rows


LPUSH = "redis-py LPUSH (JSON payload)"
BARE = "EVALSHA, HINCRBY + HSETNX + RPUSH, no checks"
SINGLE_BLOCK, SINGLE_ROUNDS = 250, 8  # calls per timed block; rounds per --blocks


def bare_lua_life_cycle(opts: s.Options) -> float:
    """The commands of redis-py's commands-cpu floor, each batch one EVALSHA of a bare script:
    Redis µs per job (the EVALSHA lines include the commands their scripts run)."""
    r = s.client(opts.url)
    records = [json.dumps(s.payload(i)) for i in range(opts.jobs)]
    add, reserve, ack = (r.script_load(src) for src in (BARE_ADD, BARE_RESERVE, BARE_ACK))
    r.config_resetstat()
    for first in range(0, opts.jobs, 1000):
        batch = range(first, min(first + 1000, opts.jobs))
        pairs = (x for i in batch for x in (str(i), records[i]))
        r.evalsha(add, 2, "{c}:ready", "{c}:jobs", *pairs)
    while reply := cast("list[bytes]", r.evalsha(
            reserve, 3, "{c}:ready", "{c}:jobs", "{c}:leased", 100, 1 << 41,
            "0123456789abcdef")):
        ids = reply[::2]
        r.evalsha(ack, 2, "{c}:leased", "{c}:jobs", *ids,
                  *(b"0123456789abcdef:" + i for i in ids))
    usec = sum(int(v["usec"]) for k, v in s.command_stats(r).items() if k.startswith("eval"))
    return usec / opts.jobs


def redis_cpu(url: str, blocks: int) -> list[str]:
    """Median Redis µs per job life cycle of each variant, runs alternating: run.py's
    commands-cpu floor and pyqcore redis-cpu figure, and the floor's commands in bare Lua."""
    opts = s.Options(url=url, workload="redis-cpu", jobs=LIFE_JOBS, concurrency=1,
                     setting="c1", rate=0.0, seconds=0.0, role="bench")
    variants: dict[str, Callable[[s.Options], float]] = {
        "plain commands, pipelined (the floor)":
            lambda o: float(redispy_bench.commands_cpu(o)["command_usec_per_job"]),
        "the same commands in three bare Lua scripts": bare_lua_life_cycle,
        "pyqcore (add_batch, reserve, ack)":
            lambda o: float(pyqcore_bench.redis_cpu(o)["script_usec_per_job"]),
    }
    r = s.client(url)
    usec: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(max(3, blocks // 2)):
        for name, run in variants.items():
            r.flushall()
            usec[name].append(run(opts))
    floor = statistics.median(usec["plain commands, pipelined (the floor)"])
    rows = ["| job life cycle, batched | Redis µs/job | ÷ plain commands |", "|---|---:|---:|"]
    for name in variants:
        us = statistics.median(usec[name])
        rows.append(f"| {name} | {us:.2f} | {us / floor:.2f}x |")
    return rows


def drain_rate(url: str, handler: Callable[[list[Job]], None]) -> tuple[float, float]:
    """Jobs/s and client CPU µs/job of a burst drain of DRAIN_JOBS at the batch setting."""
    r = redis.Redis.from_url(url)
    r.flushall()
    producer = BaseQueue(r, name="drain")
    for first in range(0, DRAIN_JOBS, 1000):
        producer.add_batch([s.payload(i) for i in range(first, first + 1000)])
    worker = BaseQueue(redis.Redis.from_url(url), name="drain", batch_handler=handler)
    cpu, start = time.process_time(), time.perf_counter()
    report = worker.process(concurrency=BATCH_SLOTS, prefetch=BATCH_PREFETCH, burst=True,
                            install_signal_handlers=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert report.acked == DRAIN_JOBS, report
    return DRAIN_JOBS / seconds, cpu / DRAIN_JOBS * 1e6


def incr_costs(url: str) -> tuple[float, float, float]:
    """µs per INCR with redis-py: pipelined 1,000 at a time, one round trip at a time, and the
    client CPU of the latter (process time: what more threads in one process cannot share)."""
    r = redis.Redis.from_url(url)
    start = time.perf_counter()
    for _ in range(DRAIN_JOBS // 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(1000):
            pipe.incr("limits:counter")
        pipe.execute()
    pipelined = (time.perf_counter() - start) / DRAIN_JOBS * 1e6
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(BLOCK):
        r.incr("limits:counter")
    return (pipelined, (time.perf_counter() - start) / BLOCK * 1e6,
            (time.process_time() - cpu) / BLOCK * 1e6)


def batch_drain(url: str, blocks: int) -> list[str]:
    """pyqcore's share and the body's share of a batch-handler drain, and the drain itself."""
    body = redis.Redis.from_url(url)

    def incr_each(jobs: list[Job]) -> None:
        pipe = body.pipeline(transaction=False)
        for _ in jobs:
            pipe.incr("limits:counter")
        pipe.execute()

    runs = max(3, blocks // 2)
    empty = [drain_rate(url, lambda jobs: None) for _ in range(runs)]
    incr = [incr_costs(url) for _ in range(runs)]
    full = [drain_rate(url, incr_each) for _ in range(runs)]
    empty_rate = statistics.median(rate for rate, _ in empty)
    empty_cpu = statistics.median(cpu for _, cpu in empty)
    pipelined = statistics.median(p for p, _, _ in incr)
    one_by_one = statistics.median(o for _, o, _ in incr)
    one_cpu = statistics.median(c for _, _, c in incr)
    bound = 1e6 / (1e6 / empty_rate + pipelined)
    full_rate = statistics.median(rate for rate, _ in full)
    return [
        "| drain, batch handler, process(concurrency=2, prefetch=1000) | jobs/s | µs/job |",
        "|---|---:|---:|",
        f"| pyqcore alone (no-op batch handler; client CPU {empty_cpu:.1f} µs/job) | "
        f"{empty_rate:,.0f} | {1e6 / empty_rate:.1f} |",
        f"| the body alone: redis-py INCR, pipelined 1,000 at a time | {1e6 / pipelined:,.0f} | "
        f"{pipelined:.1f} |",
        f"| bound: the two shares one after the other | {bound:,.0f} | {1e6 / bound:.1f} |",
        f"| measured: pyqcore with the INCR batch handler | {full_rate:,.0f} | "
        f"{1e6 / full_rate:.1f} |",
        f"| (a per-job handler's floor: redis-py INCR, one round trip at a time; client CPU "
        f"{one_cpu:.1f} µs of it) | {1e6 / one_by_one:,.0f} | {one_by_one:.1f} |",
    ]


class AnswersAtOnce:
    """A redis.asyncio stand-in that answers every enqueue call after one turn of the loop:
    what a gather of adds costs the client alone."""

    def get_connection_kwargs(self) -> dict[str, Any]:
        return {}

    async def execute_command(self, *args: Any) -> Any:
        await asyncio.sleep(0)
        n = int(args[3 + int(args[2]) + 2])  # EVALSHA sha numkeys keys... due id_prefix n ...
        return b"1" if n == 1 else [0, ",".join(map(str, range(1, n + 1))).encode()]


async def _asyncio_alone(n: int, *, shared: bool) -> None:
    """A gather of ``n`` tasks, each awaiting a future that another task resolves: one future
    they all share, or one each (as each add waiting in pyqcore's coalescer has)."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future()] * n if shared else [loop.create_future() for _ in range(n)]

    async def wait(future: asyncio.Future[None]) -> None:
        await future

    async def release() -> None:
        await asyncio.sleep(0)
        for future in set(futures):
            future.set_result(None)

    await asyncio.gather(release(), *(wait(f) for f in futures))


def concurrent_adds(url: str, blocks: int) -> list[str]:
    """µs per add of a gather of CONCURRENT adds, and what bounds it, in alternating blocks."""
    payloads = [s.payload(i) for i in range(s.CONCURRENT)]

    async def go() -> dict[str, list[float]]:
        client = redis.asyncio.Redis.from_url(url)
        on_redis = pyqcore.asyncio.BaseQueue(client, name="gather")
        batched = pyqcore.asyncio.BaseQueue(client, name="batch")
        at_once = pyqcore.asyncio.BaseQueue(AnswersAtOnce(), name="fake")  # type: ignore[arg-type]
        at_once.core.announced = True
        variants: dict[str, Callable[[], Any]] = {
            SHARED_FUTURE: lambda: _asyncio_alone(s.CONCURRENT, shared=True),
            OWN_FUTURES: lambda: _asyncio_alone(s.CONCURRENT, shared=False),
            "pyqcore's gather on a client that answers at once (its client cost)":
                lambda: asyncio.gather(*(at_once.add(p) for p in payloads)),
            ON_REDIS: lambda: asyncio.gather(*(on_redis.add(p) for p in payloads)),
            ADD_BATCH: lambda: batched.add_batch(payloads),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(blocks * 3):
            for name, run in variants.items():
                began = time.perf_counter()
                await run()
                times[name].append((time.perf_counter() - began) / s.CONCURRENT * 1e6)
        await client.aclose()
        return times

    us = {name: statistics.median(values) for name, values in asyncio.run(go()).items()}
    floor, batch, gathered = us[SHARED_FUTURE], us[ADD_BATCH], us[ON_REDIS]
    rows = ["| 1,000 adds awaited at once (asyncio) | µs/add | adds/s | ÷ add_batch's rate |",
            "|---|---:|---:|---:|"]
    for name, value in us.items():
        rows.append(f"| {name} | {value:.1f} | {1e6 / value:,.0f} | {batch / value:.0%} |")
    bound = floor + batch
    rows.append(f"| bound: asyncio alone (a shared future) + add_batch's cost per job | "
                f"{bound:.1f} | {1e6 / bound:,.0f} | {batch / bound:.0%} |")
    target = 2 * batch  # 50% of add_batch's rate
    rows += ["", f"The target (50% of add_batch's rate) allows {target:.1f} µs per add: "
             f"{target - batch:.1f} µs per caller beyond add_batch's {batch:.1f} µs a job. "
             f"CPython's task machinery alone (a task that awaits a shared future) costs "
             f"{floor:.1f} µs, {floor / (target - batch):.1f} times that budget; pyqcore's gather "
             f"costs {gathered - batch:.1f} µs per caller beyond add_batch's share."]
    return rows


SHARED_FUTURE = "asyncio alone: a gather of 1,000 tasks that await one shared future"
OWN_FUTURES = "asyncio alone: a gather of 1,000 tasks that await a future each"
ON_REDIS = "pyqcore's gather on Redis (a default redis.asyncio.Redis)"
ADD_BATCH = "add_batch of the same 1,000 jobs"
THREAD_HOPS = 20_000  # wake-ups per timed ring run


def _threads_alone(threads: int) -> float:
    """µs per wake-up of a thread blocked on a lock another thread releases: ``threads``
    threads in a ring, each waiting for its lock and then releasing the next one's (what a
    thread waiting in the coalescer pays to be handed its result or its turn)."""
    locks = [threading.Lock() for _ in range(threads)]
    for lock in locks:
        lock.acquire()
    hops = THREAD_HOPS // threads

    def hop(i: int) -> None:
        for _ in range(hops):
            locks[i].acquire()
            locks[(i + 1) % threads].release()

    ring = [threading.Thread(target=hop, args=(i,)) for i in range(threads)]
    for t in ring:
        t.start()
    began = time.perf_counter()
    locks[0].release()
    for t in ring:
        t.join()
    return (time.perf_counter() - began) / (hops * threads) * 1e6


def _threads_adding(url: str, threads: int, jobs: int) -> float:
    """µs per add of ``threads`` threads sharing one sync queue, each adding in a loop."""
    queue = BaseQueue(redis.Redis.from_url(url), name="threads")
    queue.add("announces the queue")
    per = jobs // threads

    def produce() -> None:
        for i in range(per):
            queue.add(s.payload(i))

    workers = [threading.Thread(target=produce) for _ in range(threads)]
    began = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return (time.perf_counter() - began) / (per * threads) * 1e6


def _sync_batch(url: str, jobs: int) -> float:
    """µs per job of the sync add_batch, 1,000 a call."""
    queue = BaseQueue(redis.Redis.from_url(url), name="sync-batch")
    payloads = [s.payload(i) for i in range(1000)]
    queue.add_batch(payloads)  # announces
    began = time.perf_counter()
    for _ in range(jobs // 1000):
        queue.add_batch(payloads)
    return (time.perf_counter() - began) / (jobs // 1000 * 1000) * 1e6


def threaded_adds(url: str, blocks: int) -> list[str]:
    """Threads sharing a sync queue (run.py's 8), against what a thread wake-up costs and the
    sync add_batch, in alternating runs."""
    threads = pyqcore_bench.THREADS
    runs: dict[str, list[float]] = {"hop": [], "adds": [], "batch": []}
    for _ in range(max(3, blocks // 2)):
        runs["hop"].append(_threads_alone(threads))
        runs["adds"].append(_threads_adding(url, threads, 8_000))
        runs["batch"].append(_sync_batch(url, 20_000))
        redis.Redis.from_url(url).flushall()
    hop, adds, batch = (statistics.median(runs[k]) for k in ("hop", "adds", "batch"))
    return [
        f"| {threads} threads | µs | per second |", "|---|---:|---:|",
        f"| threads alone: a wake-up (a ring of {threads} threads, each waiting for its lock, "
        f"then releasing the next one's) | {hop:.1f} | {1e6 / hop:,.0f} |",
        f"| pyqcore: {threads} threads sharing one sync queue, adding in a loop (on Redis) | "
        f"{adds:.1f} | {1e6 / adds:,.0f} |",
        f"| sync add_batch, 1,000 a call (per job) | {batch:.1f} | {1e6 / batch:,.0f} |",
        "",
        f"Each add of a thread that waits (for its turn or its result) costs a wake-up: "
        f"{hop:.1f} µs of the GIL and the scheduler alone, {hop / batch:.0f} times add_batch's "
        f"cost per job.",
    ]


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of process group ``pgid`` and of
    their children (pyqcore's supervisor starts each worker in a session of its own)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, int, int]] = {}  # pid -> (ppid, pgrp, cpu ticks)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state, ppid, pgrp, ..., utime (14th), stime (15th)
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[2]),
                                        int(fields[11]) + int(fields[12]))
    group = {pid for pid, (_, pgrp, _) in stats.items() if pgrp == pgid}
    group |= {pid for pid, (ppid, _, _) in stats.items() if ppid in group}
    return sum(stats[pid][2] for pid in group) / ticks


def _machine_busy() -> float:
    """CPU seconds every core of the machine has spent busy so far (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# Drains of process_drains: (setting, slots) -> one process at run.py's best setting
# (``concurrency`` slots), or ``pyqcore worker --processes 2 --concurrency slots``.
PROCESS_SETTINGS = [("best", 1), ("best", 2), ("p2", 1), ("p2", 2), ("p2", 4)]


def _drain_cpu(url: str, setting: str, slots: int) -> tuple[float, float, float, float]:
    """One drain of DRAIN_JOBS (INCR body): seconds, and the CPU seconds its worker processes,
    Redis and the rest of the machine used meanwhile."""
    r = redis.Redis.from_url(url)
    r.flushall()
    opts = s.Options(url=url, workload="drain", jobs=DRAIN_JOBS, concurrency=slots,
                     setting=setting, rate=0.0, seconds=0.0, role="bench")
    pyqcore_bench.enqueue_bulk(opts, DRAIN_JOBS)
    default_slots, pyqcore_bench.P2_SLOTS = pyqcore_bench.P2_SLOTS, slots
    try:
        workers = s.start_workers(pyqcore_bench.ADAPTER, opts, DRAIN_JOBS, "incr")
    finally:
        pyqcore_bench.P2_SLOTS = default_slots
    try:
        while not r.exists(s.FIRST):
            workers.check()
            time.sleep(0.001)
        began, busy, redis_cpu = time.time(), _machine_busy(), s.cpu_seconds(r)
        group = sum(_group_cpu(p.pid) for p in workers.procs)
        r.blpop([s.DONE], 60)
        wall = time.time() - began
        group = sum(_group_cpu(p.pid) for p in workers.procs) - group
        busy, redis_cpu = _machine_busy() - busy, s.cpu_seconds(r) - redis_cpu
    finally:
        workers.stop()
    return wall, group, redis_cpu, max(0.0, busy - group - redis_cpu)


def process_drains(url: str, blocks: int = 3) -> list[str]:
    """Drains at one process and two (PROCESS_SETTINGS), runs alternating, medians: jobs/s,
    the cores the worker processes, Redis and the rest of the machine used, and each side's
    CPU per job, which bounds the drain: 2 cores / (worker's + Redis's µs per job)."""
    runs: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {
        key: [] for key in PROCESS_SETTINGS}
    for _ in range(max(1, blocks // 2)):
        for setting, slots in PROCESS_SETTINGS:
            runs[setting, slots].append(_drain_cpu(url, setting, slots))
    rows = ["| drain (INCR), pyqcore | jobs/s | worker processes' cores | Redis's cores | "
            "the rest's cores | worker µs/job | Redis µs/job | ceiling on 2 cores, jobs/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (setting, slots), measured in runs.items():
        wall, group, redis_cpu, rest = (statistics.median(m[i] for m in measured)
                                        for i in range(4))
        worker_us, redis_us = group / DRAIN_JOBS * 1e6, redis_cpu / DRAIN_JOBS * 1e6
        opts = s.Options(url=url, workload="drain", jobs=DRAIN_JOBS, concurrency=slots,
                         setting=setting, rate=0.0, seconds=0.0, role="bench")
        name = (f"pyqcore worker --processes {s.PROCESSES} --concurrency {slots}"
                if setting == "p2" else pyqcore_bench.settings(opts))
        rows.append(f"| {name} | {DRAIN_JOBS / wall:,.0f} | {group / wall:.2f} | "
                    f"{redis_cpu / wall:.2f} | {rest / wall:.2f} | {worker_us:.1f} | "
                    f"{redis_us:.1f} | {2e6 / (worker_us + redis_us):,.0f} |")
    return rows


# Each section: its title and how it is measured (url, alternating blocks) -> table lines.
SECTIONS: dict[str, tuple[str, Callable[[str, int], list[str]]]] = {
    "single": ("Single add", lambda url, blocks: single_add(redis.Redis.from_url(url), blocks)),
    "cpu": ("Redis CPU per job life cycle", redis_cpu),
    "drain": ("Drain with a batch handler (INCR per job, pipelined per batch)", batch_drain),
    "gather": ("Concurrent adds (a gather of 1,000)", concurrent_adds),
    "threads": ("Concurrent adds (threads sharing a sync queue)", threaded_adds),
    "processes": ("Two worker processes on 2 cores", process_drains),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="measure on this Redis (it is FLUSHALLed!) instead of a new one")
    p.add_argument("--blocks", type=int, default=7, help="alternating blocks per variant")
    p.add_argument("--only", help=f"comma-separated sections ({','.join(SECTIONS)}); printed, "
                                  f"results/limits.md is written by a run of all of them")
    a = p.parse_args(argv)
    names = a.only.split(",") if a.only else list(SECTIONS)
    unknown = set(names) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; there are {', '.join(SECTIONS)}")
    lines = ["# pyqcore: the limits under the targets", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} · medians; `python bench/limits.py` to rerun.",
             ""]
    with contextlib.ExitStack() as stack:
        url = a.url or stack.enter_context(LocalRedis()).url
        for name in names:
            redis.Redis.from_url(url).flushall()
            title, measure = SECTIONS[name]
            lines += [f"## {title}", "", *measure(url, a.blocks), ""]
    text = "\n".join(lines)
    if not a.only:
        RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
