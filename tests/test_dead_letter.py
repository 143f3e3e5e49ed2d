"""DeadLetterQueue: listing, age-based purge and redrive, the redrive bound, manual requeue; on
the sync and the asyncio driver (``manager``, ``api``), one server and a cluster."""

from __future__ import annotations

from pyqcore import BaseQueue, DeadLetterReport, QueueManager
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS

HOUR = 3600.0


def kill(queue: BaseQueue, payload: object, error: Exception | None = None) -> str:
    """Add a job and fail it for good; returns its id."""
    job_id = queue.add(payload, context={"by": "test"})
    [job] = queue.reserve()
    assert job.id == job_id
    queue.fail(job, error or RuntimeError(f"{payload} failed"), retry=False)
    return job_id


def test_items_carry_payload_context_and_error(manager: QueueManager, clock: FakeClock) -> None:
    queue = manager.register("orders")
    job_id = kill(queue, {"order": 1}, ValueError("card declined"))
    [item] = manager.dead_letter_queue.items()
    assert (item.queue, item.job_id, item.payload, item.context) == (
        "orders", job_id, {"order": 1}, {"by": "test"})
    assert item.error is not None
    assert (item.error.type, item.error.message) == ("ValueError", "card declined")
    assert "ValueError: card declined" in item.error.traceback
    assert item.failed_at == clock.now and item.attempts == 1 and item.redrives == 0
    assert item.record is None  # decoded: no raw bytes to show
    assert manager.dead_letter_queue.count() == 1


def test_old_items_are_purged_and_young_ones_redriven(manager: QueueManager, client: Client,
                                                      clock: FakeClock) -> None:
    queue = manager.register("orders")
    old = kill(queue, "old")
    clock.advance(5 * HOUR)
    young = kill(queue, "young")
    clock.advance(1)
    report = manager.dead_letter_queue.process_dead_letter_queue(max_age=4 * HOUR)
    assert report == DeadLetterReport(purged=1, redriven=1, kept_back=0)
    assert queue.counts() == {"ready": 1, "delayed": 0, "leased": 0, "dead": 0}
    [job] = queue.reserve()
    assert (job.id, job.payload, job.attempt) == (young, "young", 1)
    assert client.hexists(queue.keys.key("jobs"), old) == 0


def test_a_poison_job_is_redriven_at_most_max_redrives_times(
    api: Api, client: Client, clock: FakeClock
) -> None:
    manager = api.QueueManager(client, clock=clock, max_redrives=2)
    queue = manager.register("orders")
    job_id = kill(queue, "poison")
    dlq = manager.dead_letter_queue
    for _ in range(2):
        assert dlq.process_dead_letter_queue().redriven == 1
        [job] = queue.reserve()
        queue.fail(job, RuntimeError("again"), retry=False)
    assert dlq.process_dead_letter_queue() == DeadLetterReport(kept_back=1)
    [item] = dlq.items()
    assert (item.job_id, item.redrives) == (job_id, 2)
    assert dlq.reprocess_item(item) is False
    assert dlq.reprocess_item(item, force=True) is True
    assert dlq.reprocess_item(item) is False  # no longer dead


def test_kept_back_items_do_not_block_younger_ones(api: Api, client: Client,
                                                   clock: FakeClock) -> None:
    manager = api.QueueManager(client, clock=clock, max_redrives=0)
    queue = manager.register("orders")
    stuck = [kill(queue, i) for i in range(3)]
    manager.dead_letter_queue.max_redrives = 1
    for job_id in stuck:  # spend their one redrive
        manager.dead_letter_queue.requeue("orders", [job_id], force=False)
    for job in queue.reserve(count=3):
        queue.fail(job, RuntimeError(), retry=False)
    fresh = kill(queue, "fresh")
    report = manager.dead_letter_queue.process_dead_letter_queue()
    assert (report.redriven, report.kept_back) == (1, 3)
    assert [j.id for j in queue.reserve()] == [fresh]


def test_dlq_works_on_queues_it_only_knows_by_name(api: Api, client: Client,
                                                   clock: FakeClock) -> None:
    producer = api.QueueManager(client, clock=clock)
    kill(producer.register("billing"), "invoice")
    operator = api.QueueManager(client, clock=clock)  # registers nothing
    [item] = operator.dead_letter_queue.items()
    assert (item.queue, item.payload) == ("billing", "invoice")
    assert operator.dead_letter_queue.requeue("billing") == 1
    assert producer.get_queue("billing").counts()["ready"] == 1


def test_undecodable_record_is_listed_raw(manager: QueueManager, client: Client) -> None:
    queue = manager.register("orders")
    job_id = queue.add("x")
    client.hset(queue.keys.key("jobs"), job_id, b"\xff\xfe garbage")
    assert queue.reserve() == []
    [item] = manager.dead_letter_queue.items()
    assert item.payload is None and item.record == b"\xff\xfe garbage"
    assert item.error is not None and item.error.type == "DeserializationError"


def test_purge_by_ids_and_everything(manager: QueueManager, client: Client) -> None:
    queue = manager.register("orders")
    a, b, c = (kill(queue, n) for n in "abc")
    dlq = manager.dead_letter_queue
    assert dlq.purge("orders", ids=[a, "not-dead"]) == 1
    assert dlq.purge() == 2
    assert dlq.count() == 0
    assert client.hlen(queue.keys.key("jobs")) == 0, (b, c)


def test_a_dead_job_is_found_by_its_id_in_any_partition(api: Api, client: Client) -> None:
    manager = api.QueueManager(client)
    queue = manager.register("parts", partitions=3, max_retries=0)
    ids = queue.add_batch(["a", "b", "c"])
    for job in queue.reserve(count=3) + queue.reserve(count=3) + queue.reserve(count=3):
        queue.fail(job, ValueError(f"bad {job.payload}"))
    dlq = manager.dead_letter_queue
    for job_id in ids:
        item = dlq.get("parts", job_id)
        assert item is not None and item.job_id == job_id
        assert item.error is not None and item.error.message == f"bad {item.payload}"
    assert dlq.get("parts", "nope") is None
