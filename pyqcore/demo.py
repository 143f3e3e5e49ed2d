"""``pyqcore demo``: bulk-produce jobs, run workers through retries into the dead-letter queue,
"fix the bug", redrive, and print what happened at each step.

Uses PYQCORE_REDIS_URL / REDIS_URL when set (touching only keys under its own prefix), else a
throwaway redis-server on a free port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from pyqcore import Backoff, BaseQueue, Job, QueueManager
from pyqcore.core.slot import WorkerReport
from pyqcore.local_redis import LocalRedis

PREFIX = "pyqcore-demo"


class FlakyNetwork(Exception):
    """A failure that goes away when retried."""


class MailboxUnavailable(Exception):
    """A failure that retries cannot fix: the job ends in the dead-letter queue."""


class EmailQueue(BaseQueue):
    """Sends emails: 1 in 50 times out on its first delivery; bounce addresses always fail
    until ``bounces_fixed`` is set (the "bug fix" before the redrive)."""

    name = "emails"
    max_retries = 2
    visibility_timeout = 30.0
    backoff = Backoff.exponential(base=0.01, cap=0.1, jitter=0.1)
    bounces_fixed = False

    def process_job(self, job: Job) -> None:
        if job.payload.get("flaky") and job.attempt == 1:
            raise FlakyNetwork("SMTP connection timed out")
        if job.payload["to"].endswith("@bounce.test") and not self.bounces_fixed:
            raise MailboxUnavailable(f"550 mailbox unavailable: {job.payload['to']}")


def make_thumbnail(job: Job) -> None:
    """A plain handler function registered as a queue."""
    _ = job.payload["width"] * job.payload["height"]


@contextmanager
def demo_redis() -> Iterator[tuple[redis.Redis, str]]:
    """The configured Redis, or a throwaway local server."""
    url = os.environ.get("PYQCORE_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        client = redis.Redis.from_url(url)
        yield client, f"{url} (only keys under {PREFIX}: are touched)"
        for key in client.scan_iter(match=f"{PREFIX}:*", count=1000):
            client.delete(key)
        return
    with LocalRedis() as server:
        yield server.client(), f"a throwaway redis-server on port {server.port}"


def _report(title: str, reports: dict[str, WorkerReport], seconds: float) -> None:
    print(f"\n{title} ({seconds:.2f} s)")
    print(f"  {'queue':<11}{'delivered':>10}{'acked':>8}{'retried':>9}{'dead':>6}")
    for name, r in sorted(reports.items()):
        print(f"  {name:<11}{r.delivered:>10}{r.acked:>8}{r.retried:>9}{r.dead:>6}")


def _run_until_settled(manager: QueueManager) -> tuple[dict[str, WorkerReport], float]:
    """Burst workers until no job waits for a retry either (burst alone stops when nothing is
    ready, and a retry waiting out its backoff is not ready yet)."""
    started = time.perf_counter()
    totals: dict[str, WorkerReport] = {}
    while True:
        for name, r in manager.process_all_queues(concurrency=4, burst=True,
                                                  install_signal_handlers=False).items():
            t = totals.setdefault(name, WorkerReport())
            t.delivered, t.acked = t.delivered + r.delivered, t.acked + r.acked
            t.retried, t.dead = t.retried + r.retried, t.dead + r.dead
        sizes = manager.monitor_queue_sizes(process_dead_letters=False).values()
        if not any(counts["delayed"] for counts in sizes):
            return totals, time.perf_counter() - started
        time.sleep(0.02)  # the retries' backoff (10-100 ms in this demo)


def _sizes(manager: QueueManager) -> None:
    for name, counts in manager.monitor_queue_sizes(process_dead_letters=False).items():
        print(f"  {name:<11}" + "  ".join(f"{k} {v}" for k, v in counts.items()))


def run(jobs: int = 10_000) -> None:
    """The whole demo, printed step by step."""
    with demo_redis() as (client, where):
        print(f"pyqcore demo on {where}")
        manager = QueueManager(client, prefix=PREFIX)
        manager.register(EmailQueue)
        manager.register("thumbnails", handler=make_thumbnail)
        emails, thumbs = manager.get_queue("emails"), manager.get_queue("thumbnails")

        payloads = [{"to": f"user{i}@{'bounce' if i % 200 == 7 else 'example'}.test",
                     "template": "welcome", "flaky": i % 50 == 3} for i in range(jobs)]
        started = time.perf_counter()
        emails.add_batch(payloads, context={"campaign": "demo"})
        took = time.perf_counter() - started
        thumbs.add_batch({"width": 64 + i % 8, "height": 64} for i in range(jobs // 5))
        corrupt = thumbs.add({"width": 1, "height": 1})
        client.hset(thumbs.keys.key("jobs"), corrupt, b"\xc1 not a record")
        print(f"\n1. produced {jobs:,} emails with add_batch in {took * 1000:.0f} ms "
              f"({jobs / took:,.0f} jobs/s), {jobs // 5 + 1:,} thumbnails "
              "(one record then corrupted in Redis)")
        _sizes(manager)

        reports, took = _run_until_settled(manager)
        _report("2. workers ran until every job was settled: flaky emails retried, bounces "
                "and the corrupt record went to the dead-letter queue", reports, took)
        _sizes(manager)

        dlq = manager.dead_letter_queue
        items = dlq.items(limit=1000)
        print(f"\n3. dead-letter queue: {len(items)} items, e.g.")
        for item in (items[0], items[-1]):
            error = item.error.type + ": " + item.error.message if item.error else "?"
            print(f"  {item.queue}/{item.job_id} after {item.attempts} deliveries: {error}")

        EmailQueue.bounces_fixed = True
        report = dlq.process_dead_letter_queue(max_age=4 * 3600)
        print(f"\n4. bounce handling fixed; process_dead_letter_queue: redriven "
              f"{report.redriven}, purged {report.purged}")
        reports, took = _run_until_settled(manager)
        _report("5. the redriven emails succeeded; the corrupt thumbnail died again (it stays "
                "in the DLQ until purged)", reports, took)
        _sizes(manager)
        stats = emails.stats()
        print(f"\nemails: added {stats['added']:,}, completed {stats['completed']:,}, "
              f"retried {stats['retried']:,}, dead {stats['dead']:,}, "
              f"redriven {stats.get('redriven', 0):,}; every job is accounted for: "
              f"{stats['added'] == stats['completed']}")
