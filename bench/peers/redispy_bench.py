"""The redis-py floors (run in pyqcore's venv, on the same redis-py and hiredis as pyqcore):
LPUSH of the reference payload (JSON) one round trip at a time, and pipelined 1,000 at a time;
and the Redis CPU of a job life cycle's data-structure work done with plain commands."""

from __future__ import annotations

import json
import secrets
import sys
import time
from typing import cast

import _shared as s

KEY = "bench:floor"


def lpush(opts: s.Options) -> s.Result:
    r = s.client(opts.url)
    bodies = [json.dumps(s.payload(i)) for i in range(opts.jobs)]
    start = time.perf_counter()
    for body in bodies:
        r.lpush(KEY, body)
    return {"ok": True, "seconds": time.perf_counter() - start, "jobs": opts.jobs}


def lpush_pipelined(opts: s.Options) -> s.Result:
    r = s.client(opts.url)
    bodies = [json.dumps(s.payload(i)) for i in range(opts.jobs)]
    start = time.perf_counter()
    for first in range(0, opts.jobs, s.BULK_BATCH):
        pipe = r.pipeline(transaction=False)
        for body in bodies[first : first + s.BULK_BATCH]:
            pipe.lpush(KEY, body)
        pipe.execute()
    return {"ok": True, "seconds": time.perf_counter() - start, "jobs": opts.jobs}


def commands_cpu(opts: s.Options) -> s.Result:
    """Redis's CPU for the writes and reads of pyqcore's life cycle, as plain variadic commands
    with no Lua and no checks: add (HSET jobs + RPUSH ready, 1,000 jobs a batch), reserve
    (LPOP ready 100, HMGET jobs, ZADD leased "token:id"), ack (ZREM leased, HDEL jobs). The
    floor under pyqcore's redis-cpu figure, measured the same way."""
    r = s.client(opts.url)
    jobs, ready, leased = "floor:jobs", "floor:ready", "floor:leased"
    records = [json.dumps(s.payload(i)) for i in range(opts.jobs)]
    r.config_resetstat()
    cpu = s.cpu_seconds(r)
    for first in range(0, opts.jobs, s.BULK_BATCH):
        batch = range(first, min(first + s.BULK_BATCH, opts.jobs))
        pipe = r.pipeline(transaction=False)
        pipe.hset(jobs, mapping={str(i): records[i] for i in batch})
        pipe.rpush(ready, *(str(i) for i in batch))
        pipe.execute()
    done = 0
    while popped := r.lpop(ready, 100):
        ids = cast("list[bytes]", popped)
        token = secrets.token_hex(8).encode()
        members = [token + b":" + i for i in ids]
        deadline = int(time.time() * 1000) + 30_000
        pipe = r.pipeline(transaction=False)
        pipe.hmget(jobs, ids)
        pipe.zadd(leased, dict.fromkeys(members, deadline))
        pipe.execute()
        pipe = r.pipeline(transaction=False)
        pipe.zrem(leased, *members)
        pipe.hdel(jobs, *ids)
        done += sum(pipe.execute()) // 2
    cpu = s.cpu_seconds(r) - cpu
    command_usec = sum(int(v["usec"]) for v in s.command_stats(r).values())
    return {"ok": done == opts.jobs, "jobs": done, "command_usec_per_job": command_usec / done,
            "process_usec_per_job": cpu * 1e6 / done}


def _unsupported(opts: s.Options, n: int) -> None:
    raise RuntimeError("redis-py is a floor, not a queue")


ADAPTER = s.Adapter(
    name="redis-py", script=__file__, enqueue_single=_unsupported, enqueue_bulk=None,
    settings=lambda opts: "", extra={"lpush": lpush, "lpush-pipelined": lpush_pipelined,
           "commands-cpu": commands_cpu},
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
