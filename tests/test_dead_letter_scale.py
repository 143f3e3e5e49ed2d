"""The dead-letter queue at 20,000 jobs, on one real redis-server: more than Lua's unpack limit
(about 8,000 values in Redis's Lua 5.1), which peek_dead once hit reading 12,000 jobs for
``items(offset=11900, limit=100)``. Every script reads and writes in slices, and one call's
work is bounded (purge and redrive take at most MAX_BATCH jobs per call).

Dead jobs are made only through the real scripts: enqueue, reserve, then fail (pipelined, each
with its own died time, in a shuffled order, so died order is neither id nor enqueue order),
or leases left to expire and reclaimed by reserve. On both drivers (the manager's driver sends
the calls), on one server only: the cluster adds nothing to the scripts' slicing.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from pyqcore import BaseQueue, NonRetryableError, QueueManager
from pyqcore.core.calls import Call, QueueCalls, text
from pyqcore.job import ErrorInfo
from pyqcore.scripts import load_scripts
from pyqcore.settings import MAX_BATCH
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS, FakeClock

pytestmark = BOTH_DRIVERS

N = 20_000
SCRIPTS = load_scripts()


def bury_all(manager: QueueManager, queue: BaseQueue) -> tuple[list[str], int]:
    """Add N jobs (payload k for the k-th added) and fail each for good through the fail
    script, the k-th of a shuffled order dying at first_died + k ms. Returns the ids in died
    order and first_died."""
    ids = queue.add_batch(range(N))
    leased = []
    while jobs := queue.reserve(count=1000):
        leased += jobs
    assert len(leased) == N
    random.Random(7).shuffle(leased)
    part = queue.core.partitions.parts[0]
    error = ErrorInfo.from_exception(NonRetryableError("poison")).to_json()
    clock = manager.clock
    assert clock is not None
    first_died = clock.now_ms()
    for start in range(0, N, 1000):
        calls = []
        for i, job in enumerate(leased[start : start + 1000]):
            clock.now = (first_died + start + i) / 1000  # the time this call's fail carries
            calls.append(part.fail(job.id, job.token, max_attempts=1, backoff_ms=0,
                                   error_json=error, retryable=False))
        assert {r.outcome.value for r in manager.driver.call_all(calls)} == {"dead"}
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": N}
    died_order = [job.id for job in leased]
    assert sorted(died_order) == sorted(ids) and died_order != ids
    return died_order, first_died


def expire_all(queue: BaseQueue, clock: FakeClock) -> None:
    """Lease every ready job, let the leases expire, and let reserve's housekeeping bury them
    (max_retries=0: the expired delivery was the last one), SWEEP_LIMIT per call. (Leased
    MAX_BATCH at a time: the most one reserve takes.)"""
    leased = sum(len(queue.reserve(count=MAX_BATCH, visibility_timeout=1.0))
                 for _ in range(N // MAX_BATCH))
    assert leased == N
    clock.advance(2.0)
    for _ in range(N // 1000):
        assert queue.reserve(count=0) == []
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": N}


def refused(manager: QueueManager, client: Client, call: Call[Any]) -> None:
    """The call is refused with BAD_ARGUMENT, and writes nothing."""
    before = {key: client.dump(key) for key in client.keys("*")}
    with pytest.raises(Exception, match="BAD_ARGUMENT"):
        manager.driver.run(call)
    assert {key: client.dump(key) for key in client.keys("*")} == before


@pytest.fixture
def queue(manager: QueueManager) -> BaseQueue:
    return manager.register("q", max_retries=0)


def test_scripts_peek_redrive_and_purge_20k_dead_jobs(manager: QueueManager, queue: BaseQueue,
                                                     clock: FakeClock, client: Client) -> None:
    died_order, first_died = bury_all(manager, queue)
    part: QueueCalls = queue.core.partitions.parts[0]
    run = manager.driver.run

    # peek_dead: at offset 11,900, near the end, and all 20,000 in one call (three HMGETs of
    # 20,000 fields each, in slices).
    rows = run(part.peek_dead(11_900, 100))
    assert [r.job_id for r in rows] == died_order[11_900:12_000]
    assert [r.died_ms for r in rows] == list(range(first_died + 11_900, first_died + 12_000))
    assert all(r.record and r.meta == b"1:0" and r.error and b"poison" in r.error for r in rows)
    assert [r.job_id for r in run(part.peek_dead(N - 30, 100))] == died_order[-30:]
    assert run(part.peek_dead(N, 100)) == []
    everything = run(part.peek_dead(0, N))
    assert [r.job_id for r in everything] == died_order
    by_ids = run(part.peek_dead(0, 1, ids=[*died_order[::-1], "not-dead"]))
    assert [r.job_id for r in by_ids] == died_order[::-1]

    # redrive: refused past MAX_BATCH per call; all 20,000 in batches of MAX_BATCH (each
    # batch's HMGET of 10,000 fields in slices), to the back of ready in died order.
    refused(manager, client, part.redrive(-1, -1, 0, MAX_BATCH + 1))
    batches = []
    while True:
        r = run(part.redrive(-1, -1, 0, MAX_BATCH))
        batches.append(r.redriven)
        if r.examined < MAX_BATCH:
            break
    assert batches == [MAX_BATCH, MAX_BATCH, 0]
    assert queue.counts() == {"ready": N, "delayed": 0, "leased": 0, "dead": 0}
    ready = [text(job_id) for job_id in client.lrange(queue.keys.key("ready"), 0, -1)]
    assert ready == died_order
    assert queue.stats()["redriven"] == N

    # purge: dead again (leases expired), refused past MAX_BATCH per call, then by age in
    # batches of MAX_BATCH until a batch comes back short.
    expire_all(queue, clock)
    refused(manager, client, part.purge(0, MAX_BATCH + 1))
    purged = []
    while (n := run(part.purge(0, MAX_BATCH))) == MAX_BATCH:
        purged.append(n)
    assert [*purged, n] == [MAX_BATCH, MAX_BATCH, 0]
    assert queue.counts()["dead"] == 0
    for part_name in ("jobs", "meta", "errors"):
        assert client.hlen(queue.keys.key(part_name)) == 0, part_name


def test_dead_letter_queue_api_over_20k_dead_jobs(manager: QueueManager, queue: BaseQueue,
                                                  clock: FakeClock, client: Client) -> None:
    died_order, first_died = bury_all(manager, queue)
    payload_of = {job_id: k for k, job_id in enumerate(sorted(died_order, key=int))}
    dlq = manager.dead_letter_queue

    items = dlq.items(queue="q", offset=11_900, limit=100)
    assert [item.job_id for item in items] == died_order[11_900:12_000]
    assert [item.failed_at for item in items] == [
        (first_died + k) / 1000 for k in range(11_900, 12_000)]
    for item in items:
        assert item.payload == payload_of[item.job_id] and item.queue == "q"
        assert item.error is not None and item.error.type == "NonRetryableError"
        assert (item.attempts, item.redrives) == (1, 0)
    near_end = dlq.items(queue="q", offset=N - 40, limit=100)
    assert [item.job_id for item in near_end] == died_order[-40:]
    assert dlq.count("q") == N

    assert dlq.requeue("q") == N
    assert queue.counts() == {"ready": N, "delayed": 0, "leased": 0, "dead": 0}
    first = queue.reserve(count=5)
    assert [job.id for job in first] == died_order[:5]  # requeued in died order
    assert queue.release(first) == 5

    # Dead again (leases expired), then purged.
    expire_all(queue, clock)
    [item] = dlq.items(queue="q", offset=N - 1, limit=1)
    assert item.error is not None and item.error.type == "LeaseExpired"
    assert (item.attempts, item.redrives) == (1, 1)
    assert dlq.purge("q") == N
    assert dlq.count("q") == 0
    assert client.hlen(queue.keys.key("jobs")) == 0
