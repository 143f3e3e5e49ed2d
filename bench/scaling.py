"""One partitioned queue on Redis Clusters of 1, 2 and 3 primaries: throughput, and the Redis
CPU each primary spent per job, so the spread over shards shows even on a 2-core machine.

    python bench/scaling.py [--jobs N] [--partitions P] [--concurrency C]

Writes the table and the scaling model to bench/results/scaling.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from pyqcore import BaseQueue, Job  # noqa: E402
from tests.support import LocalRedisCluster  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scaling.md"


@dataclass(frozen=True)
class Row:
    """The figures of one cluster size."""

    primaries: int
    add_rate: float  # jobs/s, add_batch
    drain_rate: float  # jobs/s, one worker process, empty body
    cpu_us: list[float]  # Redis CPU per job (add + reserve + ack), per primary
    placed: list[int]  # partitions per primary


def cpu_seconds(node: redis.Redis) -> float:
    """The server's CPU time so far (user + system)."""
    info = node.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(primaries: int, jobs: int, partitions: int, concurrency: int) -> Row:
    """Bulk-add ``jobs`` to one partitioned queue, then drain it with one worker process."""
    payloads = [{"user_id": i, "email": f"user{i}@example.com", "template": "welcome",
                 "vars": {"name": f"User {i}", "plan": "pro"}} for i in range(jobs)]

    def noop(job: Job) -> None:
        pass

    with LocalRedisCluster(primaries=primaries) as cluster:
        client = cluster.client()
        nodes = [node.client() for node in cluster.nodes]
        queue = BaseQueue(client, name="scale", partitions=partitions, handler=noop)
        before = [cpu_seconds(n) for n in nodes]
        started = time.perf_counter()
        queue.add_batch(payloads)
        added = time.perf_counter()
        report = queue.process(concurrency=concurrency, burst=True,
                               install_signal_handlers=False)
        drained = time.perf_counter()
        after = [cpu_seconds(n) for n in nodes]
        assert report.acked == jobs, report
        placed = [len(n.keys("pyqcore:{scale#*}:stats")) for n in nodes]
        for n in nodes:
            n.close()
        client.close()
    return Row(primaries, jobs / (added - started), jobs / (drained - added),
               [(a - b) / jobs * 1e6 for a, b in zip(after, before, strict=True)], placed)


def render(rows: list[Row], jobs: int, partitions: int, concurrency: int) -> str:
    """The Markdown report: the table, then the model it supports."""
    lines = [
        "# Scaling one partitioned queue over cluster shards",
        "",
        f"{jobs:,} jobs, `partitions={partitions}`, one producer (`add_batch`) then one worker "
        f"process (`process(concurrency={concurrency}, burst=True)`, empty body), on a local "
        "Redis Cluster of 1, 2 and 3 primaries. Redis CPU is each primary's `used_cpu_user + "
        "used_cpu_sys` over the run, per job (add + reserve + ack).",
        "",
        "| primaries | add jobs/s | drain jobs/s | partitions per primary | "
        "Redis CPU µs/job, per primary | total | busiest primary's share |",
        "|---:|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        total = sum(r.cpu_us)
        lines.append(
            f"| {r.primaries} | {r.add_rate:,.0f} | {r.drain_rate:,.0f} | "
            f"{' / '.join(map(str, r.placed))} | "
            f"{' / '.join(f'{c:.1f}' for c in r.cpu_us)} | {total:.1f} | "
            f"{max(r.cpu_us) / total:.0%} |")
    per_job = statistics.median(sum(r.cpu_us) for r in rows)
    per_shard = 1e6 / per_job
    lines += [
        "",
        "## Model",
        "",
        f"A job's life cycle costs about **{per_job:.1f} µs of Redis CPU** in total (median of "
        "the rows), and a partitioned queue spreads it over the shards in proportion to the "
        "partitions each holds: a partition's slot is the hash of its tag `{Q#i}`, so with few "
        "partitions per shard the placement is lumpy (the CPU shares above follow the "
        "partition counts), and many partitions per shard even it out. A Redis primary runs "
        "its scripts on one core, so "
        f"one shard tops out near 10⁶ / {per_job:.1f} ≈ **{per_shard:,.0f} jobs/s**, and N "
        f"shards near **N x {per_shard:,.0f} jobs/s** — with enough producers and workers to "
        "offer that load, and partitions ≥ shards (several per shard keep the spread even as "
        "slots move).",
        "",
        "On this 2-core machine the Redis servers, the producer and the worker share the two "
        "cores, so the measured jobs/s are bounded by the client process, not by the shards: "
        "the per-primary CPU is what shows the scaling. On real hardware (a core per primary, "
        "workers on other machines) throughput follows the model until the network or the "
        "clients become the limit.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure 1, 2 and 3 primaries and print (and save) the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    rows = []
    for primaries in (1, 2, 3):
        print(f"measuring {primaries} primaries...", file=sys.stderr)
        rows.append(measure(primaries, args.jobs, args.partitions, args.concurrency))
    report = render(rows, args.jobs, args.partitions, args.concurrency)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
