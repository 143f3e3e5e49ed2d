"""Partitioned queues: one logical queue over N hash tags, so over several cluster shards; on
the sync and the asyncio driver (``api``)."""

from __future__ import annotations

import threading
import time

import pytest
from redis.crc import key_slot

from pyqcore import BaseQueue, ConfigurationError, Job
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, Backend, FakeClock, all_keys
from tests.support.drivers import Api
from tests.support.invariants import primaries

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def per_partition(client: Client, queue: BaseQueue, state: str = "ready") -> list[int]:
    """How many jobs each partition holds in ``state``."""
    return [client.llen(p.keys.key(state)) for p in queue.core.partitions.parts]


def test_each_partition_is_its_own_slot_and_jobs_spread_evenly(
    api: Api, client: Client, backend: Backend
) -> None:
    queue = api.BaseQueue(client, name="big", partitions=6)
    tags = {key_slot(p.keys.key("ready").encode()) for p in queue.core.partitions.parts}
    assert len(tags) == 6
    ids = queue.add_batch(range(60))
    assert len(set(ids)) == 60
    assert per_partition(client, queue) == [10] * 6
    assert queue.counts() == {"ready": 60, "delayed": 0, "leased": 0, "dead": 0}
    if backend.is_cluster:  # the queue really uses several shards
        used = [node for node in primaries(client) if node.keys("pyqcore:{big#*")]
        assert len(used) >= 2


def test_a_partition_key_keeps_its_jobs_together_and_in_order(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="big", partitions=4)
    for i in range(12):
        queue.add({"seq": i}, partition_key="customer-7")
    queue.add_batch(range(8))  # noise in every partition
    assert sorted(per_partition(client, queue))[-1] >= 12  # all of customer-7 in one partition
    seen = [job.payload["seq"] for _ in range(20) for job in queue.reserve(count=20)
            if isinstance(job.payload, dict)]
    assert seen == list(range(12))


def test_idempotent_ids_hold_across_partitions(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="big", partitions=5)
    assert queue.add("first", job_id="order-42") == "order-42"
    assert queue.add("second", job_id="order-42") == "order-42"
    assert queue.add_batch(["third"], job_ids=["order-42"]) == ["order-42"]
    [job] = queue.reserve(count=10)
    assert job.payload == "first"


def test_reserve_finds_jobs_in_any_partition_and_settles_them_there(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = api.BaseQueue(client, name="big", partitions=4, clock=clock, max_retries=0)
    job_id = queue.add("lonely", partition_key="k")
    for _ in range(4):  # wherever the rotation starts, the job is found in one call
        [job] = queue.reserve()
        assert job.id == job_id and job.partition == queue.core.partitions.route([None], ["k"])[0]
        assert queue.release(job) == 1
    [job] = queue.reserve()
    assert queue.extend(job, 60) == 1
    assert queue.fail(job, RuntimeError("boom")) == "dead"
    assert queue.counts()["dead"] == 1


def test_workers_drain_every_partition(api: Api, client: Client) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            seen.append(job.payload)

    queue = api.BaseQueue(client, name="big", partitions=3, handler=handler)
    queue.add_batch(range(300))
    report = queue.process(concurrency=2, burst=True, install_signal_handlers=False)
    assert sorted(seen) == list(range(300))
    assert report.acked == 300
    assert queue.stats()["completed"] == 300


def test_dead_letter_queue_sees_the_logical_queue(api: Api, client: Client,
                                                  clock: FakeClock) -> None:
    producer = api.QueueManager(client, clock=clock)
    queue = producer.register("big", partitions=3)
    queue.add_batch(range(9))
    for job in queue.reserve(count=9) + queue.reserve(count=9) + queue.reserve(count=9):
        queue.fail(job, ValueError(job.payload), retry=False)
    operator = api.QueueManager(client, clock=clock)  # knows the queue only by name
    items = operator.dead_letter_queue.items(queue="big", limit=100)
    assert sorted(i.payload for i in items) == list(range(9))
    assert {i.partition for i in items} == {0, 1, 2}
    assert operator.dead_letter_queue.reprocess_item(items[0]) is True
    assert operator.dead_letter_queue.requeue("big", [items[1].job_id]) == 1
    assert operator.dead_letter_queue.process_dead_letter_queue().redriven == 7
    assert queue.counts() == {"ready": 9, "delayed": 0, "leased": 0, "dead": 0}
    assert operator.monitor_queue_sizes(process_dead_letters=False)["big"]["ready"] == 9


def test_a_different_partition_count_for_a_known_queue_is_refused(api: Api, client: Client) -> None:
    """The first call of a queue records its partition count; a queue object with another
    count refuses its first call, before it writes anything (registered or not)."""
    api.QueueManager(client).register("big", partitions=4).add("x")
    before = all_keys(client)
    with pytest.raises(ConfigurationError, match="partitions=4"):
        api.QueueManager(client).register("big", partitions=2).add("y")
    with pytest.raises(ConfigurationError, match="partitions=4"):
        api.BaseQueue(client, name="big").add_batch(["y", "z"])
    assert all_keys(client) == before
    assert api.BaseQueue(client, name="big", partitions=4).counts() == {
        "ready": 1, "delayed": 0, "leased": 0, "dead": 0}
    with pytest.raises(ConfigurationError):
        api.BaseQueue(client, name="big", partitions=0)


def test_an_idle_worker_wakes_for_a_job_in_any_partition(api: Api, backend: Backend,
                                                         client: Client) -> None:
    """One server: the worker blocks on every partition's wake list at once. A cluster cannot
    BLPOP across slots, so there it blocks on one partition at a time, for idle_wait each."""
    done = threading.Event()
    # On one server a long idle_wait (and no socket timeout to cap it) leaves the add's wake
    # as the only way to wake the worker within the test's 5 s.
    patient = backend.client(socket_timeout=None)
    queue = api.BaseQueue(patient, name="big", partitions=4, handler=lambda job: done.set())
    worker = threading.Thread(target=queue.process, daemon=True, kwargs={
        "max_jobs": 1, "idle_wait": 0.5 if backend.is_cluster else 60.0,
        "install_signal_handlers": False})
    worker.start()
    deadline = time.monotonic() + 10
    while not any(c.get("cmd") == "blpop" and "b" in c.get("flags", "")
                  for node in primaries(patient) for c in node.client_list()):
        assert time.monotonic() < deadline, "the worker never went idle"
        time.sleep(0.01)
    queue.add("wake up", partition_key="somewhere")
    assert done.wait(5)
    worker.join(5)
    assert not worker.is_alive()
    patient.close()
