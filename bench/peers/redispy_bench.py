"""The redis-py floors (run in pyqcore's venv, on the same redis-py and hiredis as pyqcore):
LPUSH of the reference payload (JSON) one round trip at a time, and pipelined 1,000 at a time."""

from __future__ import annotations

import json
import sys
import time

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


def _unsupported(opts: s.Options, n: int) -> None:
    raise RuntimeError("redis-py is a floor, not a queue")


ADAPTER = s.Adapter(
    name="redis-py", script=__file__, enqueue_single=_unsupported, enqueue_bulk=None,
    settings=lambda opts: "", extra={"lpush": lpush, "lpush-pipelined": lpush_pipelined},
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
