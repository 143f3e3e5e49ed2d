"""What keeping completed jobs costs: Redis's time per job of an ack (INFO commandstats, acks of
100 leased jobs between two ``CONFIG RESETSTAT``) with retention off (ack.lua), on
(``keep_completed_count``: complete.lua) and on with ``store_results``; and Redis memory per kept
completed job (``used_memory`` after the acks, minus the off run's), with small payloads and
results.

    python bench/status_costs.py [--jobs N] [--rounds N]

Starts its own redis-server (tests.support.LocalRedis); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from pyqcore import BaseQueue
from tests.support import LocalRedis

VARIANTS: dict[str, dict[str, Any]] = {
    "off (ack.lua)": {},
    "keep_completed_count (complete.lua)": {"keep_completed_count": 10_000_000},
    "keep + store_results": {"keep_completed_count": 10_000_000, "store_results": True},
}


def measure(client: redis.Redis, options: dict[str, Any], jobs: int) -> tuple[float, float]:
    """(µs of Redis time per acked job, bytes of memory per job left after the acks)."""
    client.flushall()
    queue = BaseQueue(client, name="costs", **options)
    queue.add_batch([{"order": i, "sku": "A-1"} for i in range(jobs)])
    leased = []
    while batch := queue.reserve(100):
        for job in batch:
            job.result = {"status": "ok", "total": 42.5}
        leased.append(batch)
    before = client.info("memory")["used_memory"]
    client.config_resetstat()
    for batch in leased:
        queue.ack(batch)
    usec = client.info("commandstats")["cmdstat_evalsha"]["usec"]
    after = client.info("memory")["used_memory"]
    return usec / jobs, (after - before) / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with LocalRedis() as server:
        client = redis.Redis(port=server.port)
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, options in VARIANTS.items():
                rows[name].append(measure(client, options, args.jobs))
        client.close()
    print(f"| ack of 100, {args.jobs} jobs, median of {args.rounds} | Redis µs per job | "
          "memory per job after the ack (bytes) |")
    print("|---|---|---|")
    for name, values in rows.items():
        usec = statistics.median(v[0] for v in values)
        memory = statistics.median(v[1] for v in values)
        print(f"| {name} | {usec:.2f} | {memory:+.0f} |")


if __name__ == "__main__":
    main()
