"""What a job's own options and a queue's events cost on the hot path: Redis's time per job in
each script (INFO commandstats) and the worker's CPU per job, for plain jobs and for jobs added
with ``at=``, with their own ``max_retries=``, and with a ``timeout=``; on queues with
``events=True``, with kept results (``store_results``, which writes the terminal events) and
with both; with ``--before DIR``, plain jobs (and kept results) on another checkout (the code
before these options or events existed), to show that off costs nothing.

    python bench/job_options.py [--url URL] [--rounds N] [--jobs N] [--before DIR]
                                [--variants NAME,...] [--results FILE]

Each measurement is a fresh process, in alternating rounds so drift hits every variant alike.
In turn, each phase alone between two ``CONFIG RESETSTAT`` (so ``cmdstat_evalsha`` is that
script's time, the commands it runs included): single adds, ``add_batch`` of 1,000, reserves
of 100 (all jobs leased), acks of 100; then a drain of the same number of jobs by
``process(burst=True)`` with an empty handler and one slot, timing the process's CPU.
Writes the table to bench/results/job_options.md.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from rounds import ROOT, measured_rounds, write

RESULTS = ROOT / "bench" / "results" / "job_options.md"
SINGLE = 2_000  # single adds timed per measurement
VARIANTS = {
    "before": "plain, before the options (--before checkout)",
    "plain": "plain",
    "at": "add(at=a time that has passed)",
    "max_retries": "add(max_retries=3)",
    "timeout": "add(timeout=30.0)",
    "events": "queue events=True",
    "results_before": "queue store_results, before events (--before checkout)",
    "results": "queue store_results (writes completed, dead, cancelled)",
    "results_events": "queue store_results and events=True",
}
COLUMNS = ("add", "add_batch", "reserve", "ack", "life", "worker_cpu")
# The queue options of the variants that are about the queue, not the add.
KEEP = {"keep_completed_count": 10_000_000, "store_results": True}
QUEUE_OPTIONS: dict[str, dict[str, Any]] = {
    "events": {"events": True}, "results_before": KEEP, "results": KEEP,
    "results_events": {**KEEP, "events": True}}


def options_of(variant: str) -> dict[str, Any]:
    """The add options of a variant."""
    from datetime import datetime, timezone  # noqa: PLC0415

    options: dict[str, dict[str, Any]] = {
        "at": {"at": datetime(2020, 1, 1, tzinfo=timezone.utc)},
        "max_retries": {"max_retries": 3},
        "timeout": {"timeout": 30.0},
    }
    return options.get(variant, {})


def measure(variant: str, url: str, jobs: int) -> dict[str, float]:
    """One measurement in this process (see the module docstring): µs per job."""
    import redis  # noqa: PLC0415 - after --before put its checkout first on sys.path

    from pyqcore import BaseQueue  # noqa: PLC0415

    client = redis.Redis.from_url(url)
    client.flushall()
    queue = BaseQueue(client, name="options", handler=lambda job: None,
                      **QUEUE_OPTIONS.get(variant, {}))
    options = options_of(variant)

    def redis_usec() -> float:
        stats: dict[str, Any] = client.info("commandstats")
        return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))

    result: dict[str, float] = {}
    queue.add("warm-up", **options)  # the queue's announcement and script loads, untimed
    client.flushall()
    client.config_resetstat()
    for i in range(SINGLE):
        queue.add(i, **options)
    result["add"] = redis_usec() / SINGLE
    client.flushall()
    client.config_resetstat()
    for start in range(0, jobs, 1000):
        queue.add_batch(range(start, min(start + 1000, jobs)), **options)
    result["add_batch"] = redis_usec() / jobs
    client.config_resetstat()
    leased = []
    while batch := queue.reserve(count=100):
        leased.append(batch)
    result["reserve"] = redis_usec() / jobs
    client.config_resetstat()
    for batch in leased:
        queue.ack(batch)
    result["ack"] = redis_usec() / jobs
    result["life"] = result["add"] + result["reserve"] + result["ack"]
    for start in range(0, jobs, 1000):
        queue.add_batch(range(start, min(start + 1000, jobs)), **options)
    cpu = time.process_time()
    queue.process(burst=True)
    result["worker_cpu"] = (time.process_time() - cpu) / jobs * 1e6
    return result


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    """Medians per variant and column, and each against plain."""
    base = results.get("plain") or next(iter(results.values()))
    plain = {c: statistics.median(r[c] for r in base) for c in COLUMNS}
    lines = ["| variant | enqueue, single add | enqueue, add_batch | reserve | ack (complete) | "
             "life cycle: add + reserve + ack | worker CPU (drain) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant, runs in results.items():
        cells = []
        for c in COLUMNS:
            value = statistics.median(r[c] for r in runs)
            cells.append(f"{value:.2f} ({value - plain[c]:+.2f})")
        lines.append(f"| {VARIANTS[variant]} | {' | '.join(cells)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    run = measured_rounds(__file__, __doc__, VARIANTS, measure, argv, rounds=5,
                          jobs_help="jobs per phase",
                          before_help="a checkout to measure plain jobs on too")
    if run is None:
        return 0
    a, results = run
    text = "\n".join([
        "# pyqcore: what a job's own options and a queue's events cost on the hot path", "",
        f"{time.strftime('%Y-%m-%d %H:%M')} · µs per job (difference with plain): Redis's "
        "time in each script (INFO commandstats), and the worker process's CPU draining an "
        f"empty handler with one slot; {a.jobs:,} jobs per phase ({SINGLE:,} single adds), "
        f"{a.rounds} alternating runs per variant; `python bench/job_options.py` to rerun.",
        "", *table(results), ""])
    return write(a.results or RESULTS, text)


if __name__ == "__main__":
    sys.exit(main())
