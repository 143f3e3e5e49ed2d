"""Flow control (README "Flow control: decided inside reserve"): what it costs Redis, and how
exact it is with real worker processes.

    python bench/flow.py [--url URL] [--runs 5] [--before PATH]

- Redis CPU per job life cycle (add_batch of 1,000, reserve(100), ack) of a queue that uses
  none of it, as Redis's own command time (INFO commandstats: the EVALSHA/EVAL lines, which
  include the commands the scripts run), and Redis commands per job; with ``--before PATH`` (a
  checkout of the code before flow control, e.g. a ``git worktree`` of the commit before it)
  the same on that code, runs alternating, so the two are measured alike. Then the same life
  cycle with each feature in use.
- rate_limit=(100, 1 s), 3 worker processes x 4 slots, a 5 s backlog: the most starts in any
  closed 1 s window (lease times, on the server's clock), the long-run rate, and Redis commands
  per started job with and without the limit (the same drain, unlimited).
- max_active=5, 3 processes x 4 slots, jobs of 5 ms: the most handlers running at once.
- fairness: 20 jobs of group B added behind 5,000 of group A, 3 processes x 4 slots: the
  delivery position of each of B's jobs.

Every life cycle runs in a child process (``--child``) that imports pyqcore from the checkout
measured. Writes bench/results/flow.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "flow.md"
LIFE_JOBS = 20_000
BATCH, LEASE = 1000, 100
PROCESSES, SLOTS = 3, 4

# The life cycles measured: queue options, add_batch keyword arguments for batch i.
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "none of it (a plain queue)": ({}, "plain"),
    "max_active=10^6 (never binding)": ({"max_active": 1_000_000}, "plain"),
    "rate_limit=(10^6, 1 s) (never binding)": ({"rate_limit": (1_000_000, 1.0)}, "plain"),
    "priority=5 on every job": ({}, "priority"),
    "10 groups (group= on every job)": ({}, "groups"),
    "10 groups + priority + group_concurrency + group_rate_limit + rate_limit + max_active":
        ({"group_concurrency": 1_000_000, "group_rate_limit": (1_000_000, 1.0),
          "rate_limit": (1_000_000, 1.0), "max_active": 1_000_000}, "all"),
}


def add_kwargs(kind: str, batch: int) -> dict[str, Any]:
    """add_batch's flow arguments for batch number ``batch`` of a variant."""
    if kind == "priority":
        return {"priority": 5}
    if kind == "groups":
        return {"group": f"tenant-{batch % 10}"}
    if kind == "all":
        return {"group": f"tenant-{batch % 10}", "priority": batch % 3 - 1}
    return {}


def payload(i: int) -> dict[str, Any]:
    """bench/peers' reference payload."""
    return {"user_id": i, "email": f"user{i}@example.com", "template": "welcome",
            "vars": {"name": f"User {i}", "plan": "pro"}}


def stats(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """INFO commandstats by command, without the measurement's own INFO and CONFIG."""
    found: dict[str, dict[str, Any]] = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): v for k, v in found.items()
            if not k.startswith(("cmdstat_info", "cmdstat_config"))}


def life_cycle(url: str, options: dict[str, Any], kind: str) -> dict[str, float]:
    """In a child process: Redis µs and commands per job of add_batch + reserve + ack."""
    from pyqcore import BaseQueue  # noqa: PLC0415 - from the checkout this child measures

    r = redis.Redis.from_url(url)
    r.flushall()
    queue = BaseQueue(r, name="flow", **options)
    payloads = [payload(i) for i in range(LIFE_JOBS)]
    queue.add_batch(payloads[:1])  # announce the queue before the measurement
    queue.ack(queue.reserve())
    r.config_resetstat()
    for n, start in enumerate(range(0, LIFE_JOBS, BATCH)):
        extra = add_kwargs(kind, n)
        queue.add_batch(payloads[start : start + BATCH], **extra)
    added = stats(r)
    done = 0
    while done < LIFE_JOBS:
        jobs = queue.reserve(count=LEASE)
        if not jobs:
            break
        done += queue.ack(jobs)
    assert done == LIFE_JOBS, done
    total = stats(r)
    usec = sum(int(v["usec"]) for k, v in total.items() if k.startswith("eval"))
    add_usec = sum(int(v["usec"]) for k, v in added.items() if k.startswith("eval"))
    return {"usec": usec / done, "add_usec": add_usec / done,
            "lease_usec": (usec - add_usec) / done,
            "commands": sum(int(v["calls"]) for v in total.values()) / done}


def child_life_cycle(checkout: Path, url: str, options: dict[str, Any], kind: str
                     ) -> dict[str, float]:
    """``life_cycle`` run by a child process importing pyqcore from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYQCORE_PUREPYTHON": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps([url, options, kind])],
        check=True, capture_output=True, text=True, env=env, cwd=checkout).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def redis_cpu(url: str, runs: int, before: Path | None, plain_only: bool = False) -> list[str]:
    """The life-cycle table: medians over ``runs`` alternating runs (``plain_only``: the
    queue that uses none of it, before and after, alone)."""
    rows = ["| life cycle (add_batch 1,000 + reserve 100 + ack) | Redis µs/job, median | least "
            "| add | reserve + ack | commands/job |", "|---|---:|---:|---:|---:|---:|"]
    measured: dict[str, list[dict[str, float]]] = {}
    names: list[tuple[str, Path, dict[str, Any], str]] = (
        [("before: " + next(iter(VARIANTS)), before, {}, "plain")] if before else [])
    names += [(name, ROOT, options, kind) for name, (options, kind) in VARIANTS.items()]
    if plain_only:
        names = [n for n in names if n[3] == "plain" and not n[2]]
    for _ in range(runs):
        for name, checkout, options, kind in names:
            measured.setdefault(name, []).append(child_life_cycle(checkout, url, options, kind))
    for name, *_ in names:
        med = {k: statistics.median(m[k] for m in measured[name])
               for k in ("usec", "add_usec", "lease_usec", "commands")}
        least = min(m["usec"] for m in measured[name])
        rows.append(f"| {name} | {med['usec']:.2f} | {least:.2f} | {med['add_usec']:.2f} | "
                    f"{med['lease_usec']:.2f} | {med['commands']:.2f} |")
    return rows


# -- worker processes ----------------------------------------------------------------------------

def worker(url: str, options: dict[str, Any], work_ms: float, prefetch: int) -> None:
    """In a child process: drain queue "fleet" (burst), recording each start (its lease time
    on the server's clock), the handlers running at once, and the delivery order."""
    from pyqcore import BaseQueue, Job  # noqa: PLC0415

    r = redis.Redis.from_url(url)

    def handler(job: Job) -> None:
        running = r.incr("bench:running")
        pipe = r.pipeline(transaction=False)
        pipe.rpush("bench:starts", round(job.lease_deadline * 1000) - 30_000)
        pipe.rpush("bench:peaks", running)
        pipe.rpush("bench:order", job.payload[0])
        pipe.rpush("bench:leases", f"{round(job.lease_deadline * 1000) - 30_000}:{job.payload[0]}")
        pipe.execute()
        if work_ms:
            time.sleep(work_ms / 1000)
        r.decr("bench:running")

    queue = BaseQueue(r, name="fleet", handler=handler, **options)
    queue.process(concurrency=SLOTS, burst=True, prefetch=prefetch, install_signal_handlers=False)


def fleet(url: str, options: dict[str, Any], work_ms: float = 0.0, prefetch: int = 100
          ) -> dict[str, Any]:
    """Run PROCESSES workers on the queue (filled beforehand) until it drains; what they
    recorded, and Redis's command counts over the drain."""
    r = redis.Redis.from_url(url)
    r.config_resetstat()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker",
                               json.dumps([url, options, work_ms, prefetch])], env=env)
             for _ in range(PROCESSES)]
    for proc in procs:
        assert proc.wait(600) == 0
    calls = sum(int(v["calls"]) for v in stats(r).values())
    return {"starts": sorted(int(s) for s in r.lrange("bench:starts", 0, -1)),
            "peak": max(int(p) for p in r.lrange("bench:peaks", 0, -1)),
            "order": [o.decode() if isinstance(o, bytes) else o
                      for o in r.lrange("bench:order", 0, -1)],
            "leases": [text.decode() if isinstance(text, bytes) else text
                       for text in r.lrange("bench:leases", 0, -1)],
            "commands": calls}


def fill(url: str, jobs: list[tuple[list[Any], dict[str, Any]]]) -> None:
    """A fresh database with queue "fleet" holding these batches (payloads, add_batch kwargs)."""
    from pyqcore import BaseQueue  # noqa: PLC0415

    r = redis.Redis.from_url(url)
    r.flushall()
    queue = BaseQueue(r, name="fleet")
    for payloads, kwargs in jobs:
        for start in range(0, len(payloads), BATCH):
            queue.add_batch(payloads[start : start + BATCH], **kwargs)


def rate_limit_accuracy(url: str) -> list[str]:
    from tests.support.windows import most_in_window  # noqa: PLC0415 - the parent only

    n, seconds, backlog = 100, 1.0, 500
    jobs: list[tuple[list[Any], dict[str, Any]]] = [([["x", i] for i in range(backlog)], {})]
    fill(url, jobs)
    limited = fleet(url, {"rate_limit": (n, seconds)})
    starts = limited["starts"]
    fill(url, jobs)
    free = fleet(url, {})
    rate = (len(starts) - n) / ((starts[-1] - starts[0]) / 1000)
    return [
        f"rate_limit=({n}, {seconds:g} s), {PROCESSES} worker processes x {SLOTS} slots, "
        f"{backlog} jobs (a {backlog / n:g} s backlog), no job body:", "",
        "| | value |", "|---|---:|",
        f"| most starts in any closed {seconds:g} s window | {most_in_window(starts, 1000)} |",
        f"| long-run rate ((starts - n) / (last - first start)) | {rate:.2f}/s "
        f"({rate / (n / seconds) - 1:+.2%} of n/s) |",
        f"| Redis commands per started job, rate-limited | "
        f"{limited['commands'] / len(starts):.1f} |",
        f"| Redis commands per started job, the same drain without the limit | "
        f"{free['commands'] / len(free['starts']):.1f} |",
    ]


def max_active_accuracy(url: str) -> list[str]:
    cap, jobs = 5, 2000
    fill(url, [([["x", i] for i in range(jobs)], {})])
    run = fleet(url, {"max_active": cap}, work_ms=5.0, prefetch=1)
    starts = run["starts"]
    rate = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1000)
    return [f"max_active={cap}, {PROCESSES} processes x {SLOTS} slots (prefetch=1: a lease is "
            f"a running job), {jobs} jobs of 5 ms: the most handlers running at once, "
            f"fleet-wide: **{run['peak']}**; {rate:.0f} jobs/s (at most {cap} x 200/s = "
            f"{cap * 200})"]


def fairness(url: str) -> list[str]:
    rows = []
    for prefetch in (100, 1):
        fill(url, [([["A", i] for i in range(5000)], {"group": "A"}),
                   ([["B", i] for i in range(20)], {"group": "B"})])
        run = fleet(url, {}, prefetch=prefetch)
        started = [i + 1 for i, group in enumerate(run["order"]) if group == "B"]
        leases = sorted((int(ms), group) for ms, group in
                        (entry.split(":") for entry in run["leases"]))
        times = [ms for ms, _ in leases]
        # A lease's position: the deliveries leased in its millisecond or before (an upper bound)
        leased = sorted(bisect.bisect_right(times, ms) for ms, group in leases if group == "B")
        rows += [f"- prefetch={prefetch}: by lease time, B's last delivery is at most number "
                 f"**{max(leased)}** ({leased}); by handler start across the fleet, "
                 f"**{max(started)}** ({started})"]
    return [f"20 jobs of group B added behind 5,000 of group A, {PROCESSES} processes x "
            f"{SLOTS} slots, no job body. A delivery is a lease (reserve's decision, on the "
            "server's clock); handler starts across three processes also show how the OS "
            "scheduled them:", "", *rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--url", help="measure on this Redis (it is FLUSHALLed!) instead of a new one")
    p.add_argument("--runs", type=int, default=5, help="alternating runs per life cycle")
    p.add_argument("--before", type=Path, help="a checkout of the code before flow control")
    p.add_argument("--plain-only", action="store_true",
                   help="only the life cycle of a plain queue, before and after (then stop)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(life_cycle(*json.loads(a.child))))
        return 0
    if a.worker:
        worker(*json.loads(a.worker))
        return 0
    sys.path.append(str(ROOT))  # tests.support (after PYTHONPATH: children import their own)
    from tests.support import LocalRedis  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        url = a.url or stack.enter_context(LocalRedis()).url
        cpu = redis_cpu(url, a.runs, a.before, a.plain_only)
        if a.plain_only:
            print("\n".join(cpu))
            return 0
        rate = rate_limit_accuracy(url)
        active = max_active_accuracy(url)
        fair = fairness(url)
    text = "\n".join([
        "# pyqcore: flow control's cost and accuracy", "",
        f"{time.strftime('%Y-%m-%d %H:%M')} · medians of {a.runs} alternating runs; "
        "`python bench/flow.py` to rerun.", "",
        "## Redis CPU per job life cycle", "", *cpu, "",
        "## rate_limit with worker processes", "", *rate, "",
        "## max_active with worker processes", "", *active, "",
        "## Fairness between groups", "", *fair, "",
    ])
    RESULTS.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
