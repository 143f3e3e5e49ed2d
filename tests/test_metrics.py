"""``manager.snapshot()`` (both drivers) and the Prometheus collector over it (pyqcore.metrics):
the figures exported are the queue's own, summed over partitions, on one server and a
cluster."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.core import CollectorRegistry

from pyqcore import Backoff, NonRetryableError, QueueManager
from pyqcore.metrics import QueueCollector
from pyqcore.sync.driver import Client
from pyqcore.sync.worker import Worker
from tests.conftest import BOTH_BACKENDS, BOTH_DRIVERS, FakeClock
from tests.support.drivers import Api


def fill(manager: Any, clock: FakeClock) -> None:
    """A partitioned queue with jobs in every state, and a one-partition one."""

    def handle(job: object) -> None:
        raise NonRetryableError("boom")

    emails = manager.register("emails", partitions=3, handler=handle, backoff=Backoff.fixed(0))
    emails.add_batch(range(5))
    clock.advance(90)
    emails.add_batch(range(4))
    emails.add("later", delay=60)
    [first] = emails.reserve()  # one job from one partition, then another
    emails.reserve()
    emails.fail(first, NonRetryableError("dead"))
    manager.register("empty")


@BOTH_DRIVERS
@BOTH_BACKENDS
def test_snapshot_sums_partitions_and_ages_the_oldest_ready_job(
    api: Api, client: Client, clock: FakeClock
) -> None:
    manager = api.QueueManager(client, clock=clock)
    fill(manager, clock)
    manager.get_queue("empty").add("x")
    manager.get_queue("empty").reserve()
    snapshot = manager.snapshot()
    emails = snapshot["emails"]
    assert emails.counts == {"ready": 7, "delayed": 1, "leased": 1, "dead": 1}
    assert emails.stats["added"] == 10 and emails.stats["dead"] == 1
    # Reserve took two of the oldest five; three of them still wait, added 90 s ago.
    assert emails.oldest_ready_age == pytest.approx(90.0)
    assert snapshot["empty"].oldest_ready_age is None  # nothing ready


@BOTH_BACKENDS
def test_the_collector_exports_the_snapshot_and_the_workers_alive(client: Client,
                                                                 clock: FakeClock) -> None:
    manager = QueueManager(client, clock=clock)
    fill(manager, clock)
    worker = Worker(manager.get_queue("emails"), burst=True)
    manager.driver.run(worker.presence.beat())
    registry = CollectorRegistry()
    registry.register(QueueCollector(manager))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("pyqcore_jobs", queue="emails", state="ready") == 7
    assert value("pyqcore_jobs", queue="emails", state="dead") == 1
    assert value("pyqcore_jobs", queue="empty", state="ready") == 0
    assert value("pyqcore_jobs_added_total", queue="emails") == 10
    assert value("pyqcore_oldest_ready_seconds", queue="emails") == pytest.approx(90.0)
    assert value("pyqcore_workers", queue="emails") == 1
    assert value("pyqcore_workers", queue="empty") is None


@BOTH_DRIVERS
def test_snapshot_ages_the_oldest_head_of_any_partition_and_skips_a_corrupt_record(
    api: Api, client: Client, clock: FakeClock
) -> None:
    manager = api.QueueManager(client, clock=clock)
    queue = manager.register("parts", partitions=2)
    old = queue.add("old")
    clock.advance(60)
    new = queue.add("new")  # round robin: the other partition
    assert old.split("-")[0] != new.split("-")[0]
    [snapshot] = manager.snapshot().values()
    assert (snapshot.partitions, snapshot.counts["ready"]) == (2, 2)
    assert snapshot.oldest_ready_age == pytest.approx(60.0)
    part = queue.core.partitions.parts[int(old.split("-")[0])]
    client.hset(part.keys.key("jobs"), old, b"\xc1 not a record")
    clock.advance(1)
    assert manager.snapshot()["parts"].oldest_ready_age == pytest.approx(1.0)
