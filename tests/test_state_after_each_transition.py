"""The queue's keys after every transition: each job in exactly one state, nothing left behind
for a job that is gone (record, history, error, lease), counts equal to the keys' sizes, at
most one wake-up marker, lease lengths as asked. On both drivers, one server and a cluster,
with the fake clock."""

from __future__ import annotations

import json
from typing import cast

import pytest

from pyqcore import Backoff, BaseQueue, Job, NonRetryableError, Outcome, QueueManager
from pyqcore.core.calls import text
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api
from tests.support.invariants import assert_consistent

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(0))
    return api.BaseQueue(client, name="q", clock=clock, **options)  # type: ignore[arg-type]


def meta(client: Client, queue: BaseQueue, job_id: str) -> str | None:
    value = cast(bytes | None, client.hget(queue.keys.key("meta"), job_id))
    return None if value is None else text(value)


def test_a_job_leaves_nothing_behind_through_retries_and_its_ack(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("x")
    assert_consistent(client, queue)
    queue.add("later", delay=60)  # a second wake-up event while nobody waits
    assert_consistent(client, queue)
    [job] = queue.reserve()
    assert queue.extend(job) == 1
    assert_consistent(client, queue)
    queue.fail(job, RuntimeError("once"))
    assert (meta(client, queue, job_id), assert_consistent(client, queue)["ready"]) == (
        "1:0", {job_id: 0.0})
    [job] = queue.reserve()
    assert job.attempt == 2
    assert queue.ack(job) == 1
    states = assert_consistent(client, queue)
    assert states["delayed"].keys() == {"2"} and not states["leased"]


def test_a_job_failed_by_hand_with_a_non_retryable_error_is_buried(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=5)
    job_id = queue.add("bounce")
    [job] = queue.reserve()
    assert queue.fail(job, NonRetryableError("mailbox does not exist")) is Outcome.DEAD
    assert assert_consistent(client, queue)["dead"].keys() == {job_id}
    assert meta(client, queue, job_id) == "1:0"


def test_a_dead_job_redriven_then_purged_leaves_nothing_behind(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=1)
    dlq = api.QueueManager(client, clock=clock).dead_letter_queue
    job_id = queue.add("poison")
    for _ in range(2):
        [job] = queue.reserve()
        queue.fail(job, RuntimeError("boom"))
        assert_consistent(client, queue)
    assert meta(client, queue, job_id) == "2:0"
    assert json.loads(client.hget(queue.keys.key("errors"), job_id) or "{}")["message"] == "boom"
    [item] = dlq.items()
    assert dlq.reprocess_item(item) is True
    states = assert_consistent(client, queue)
    assert states["ready"] == {job_id: 0.0}
    assert meta(client, queue, job_id) == "0:1"  # attempts reset, one redrive
    assert client.hget(queue.keys.key("errors"), job_id) is None  # the stale error went
    [job] = queue.reserve()
    assert job.attempt == 1
    queue.fail(job, RuntimeError("again"), retry=False)
    assert_consistent(client, queue)
    assert dlq.purge("q", ids=[job_id]) == 1
    assert_consistent(client, queue)
    for part in ("jobs", "meta", "errors", "dead"):
        assert client.exists(queue.keys.key(part)) == 0, part


def test_an_expired_job_leaves_nothing_behind(api: Api, client: Client,
                                             clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10, max_retries=1)
    dlq = api.QueueManager(client, clock=clock).dead_letter_queue
    crashing = queue.add("crashes its worker")
    for _ in range(2):
        assert [j.id for j in queue.reserve()] == [crashing]
        assert_consistent(client, queue)
        clock.advance(10)
    assert queue.reserve() == []  # reclaimed for the last time: dead
    assert assert_consistent(client, queue)["dead"].keys() == {crashing}
    assert meta(client, queue, crashing) == "2:0"
    assert dlq.purge("q", max_age=0) == 1
    assert_consistent(client, queue)


def orphan_with_a_history(client: Client, queue: BaseQueue) -> str:
    """A job that failed once (so it has a history and an error), then lost its record."""
    orphan = queue.add("its record is lost")
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))
    client.hdel(queue.keys.key("jobs"), orphan)
    assert queue.reserve() == []  # dropped, counted
    assert queue.stats()["orphaned"] == 1
    return orphan


def test_an_orphan_is_dropped_with_its_history(api: Api, client: Client,
                                               clock: FakeClock) -> None:
    queue = make(api, client, clock)
    orphan = orphan_with_a_history(client, queue)
    assert meta(client, queue, orphan) is None
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_an_orphan_is_dropped_with_its_error(api: Api, client: Client,
                                             clock: FakeClock) -> None:
    queue = make(api, client, clock)
    orphan = orphan_with_a_history(client, queue)
    assert client.hget(queue.keys.key("errors"), orphan) is None


def test_an_ack_of_over_a_thousand_jobs_clears_every_error(
    api: Api, client: Client, clock: FakeClock
) -> None:
    """The ack script deletes errors only for jobs with a history, judged per slice of 1000:
    a history in an early slice must not be missed because the last slice has none."""
    queue = make(api, client, clock)
    first = queue.add("fails once")
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))
    queue.add_batch(range(1000))
    jobs = queue.reserve(count=1001)
    retried = [j for j in jobs if j.id == first]
    assert len(jobs) == 1001 and len(retried) == 1
    assert queue.ack([*retried, *(j for j in jobs if j.id != first)]) == 1001
    assert_consistent(client, queue)
    assert client.exists(queue.keys.key("errors"), queue.keys.key("meta")) == 0


def test_extend_by_a_length_of_its_own(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add("long")
    [job] = queue.reserve()
    assert queue.extend(job, 25) == 1
    assert job.lease_deadline == pytest.approx(clock.now + 25)
    assert assert_consistent(client, queue)["leased"][job.id] == round((clock.now + 25) * 1000)
    clock.advance(24.999)
    assert queue.reserve() == []  # past the queue's 10 s: still leased
    clock.advance(0.001)
    [again] = queue.reserve()
    assert (again.id, again.attempt) == (job.id, 2)


def test_reserve_with_a_lease_length_of_its_own(api: Api, client: Client,
                                                clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=30)
    queue.add("short")
    [job] = queue.reserve(visibility_timeout=5)
    assert job.lease_deadline == pytest.approx(clock.now + 5)
    assert assert_consistent(client, queue)["leased"][job.id] == round((clock.now + 5) * 1000)
    clock.advance(5)
    [again] = queue.reserve()
    assert (again.id, again.attempt) == (job.id, 2)
    assert again.lease_deadline == pytest.approx(clock.now + 30)


def test_an_extend_of_held_and_lost_leases_moves_only_the_held(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add_batch(["lost", "held"])
    [lost] = queue.reserve()
    clock.advance(10)
    [relet, held] = queue.reserve(count=2)  # "lost" was reclaimed and leased again
    assert relet.id == lost.id
    before = lost.lease_deadline
    clock.advance(1)
    assert queue.extend([lost, held], 20) == 1
    assert lost.lease_deadline == before  # refused: its deadline stays as it was
    assert held.lease_deadline == pytest.approx(clock.now + 20)
    assert_consistent(client, queue)


def test_manager_and_queue_views_agree_after_a_redrive_scan(
    api: Api, client: Client, clock: FakeClock
) -> None:
    manager: QueueManager = api.QueueManager(client, clock=clock)
    queue = make(api, client, clock)
    jobs: list[Job] = []
    for i in range(3):
        queue.add(i)
        jobs += queue.reserve()
    for job in jobs:
        queue.fail(job, RuntimeError("dead"), retry=False)
    assert manager.dead_letter_queue.process_dead_letter_queue().redriven == 3
    states = assert_consistent(client, queue)
    assert list(states["ready"]) == [j.id for j in jobs]
    assert client.exists(queue.keys.key("errors")) == 0
