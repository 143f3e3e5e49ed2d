"""``queue.get_job(id)``: every state a job can be found in (waiting, delayed, active, dead),
None once it is gone, and partitioned queues (an id added with a partition_key lives in any
partition). On both drivers, one server and a cluster, with the fake clock."""

from __future__ import annotations

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, JobInfo
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(10))
    return api.BaseQueue(client, name="status", clock=clock, **options)  # type: ignore[arg-type]


def test_a_job_is_found_in_every_state_it_passes_through(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=1)
    added_at = clock.now
    job_id = queue.add({"order": 42}, context={"trace": "t"}, job_id="order-42")
    waiting = queue.get_job(job_id)
    assert isinstance(waiting, JobInfo)
    assert (waiting.id, waiting.queue, waiting.state, waiting.payload, waiting.context,
            waiting.attempts, waiting.error) == (
        "order-42", "status", "waiting", {"order": 42}, {"trace": "t"}, 0, None)
    assert waiting.added_at == pytest.approx(added_at, abs=1)

    [job] = queue.reserve(visibility_timeout=30)
    active = queue.get_job(job_id)
    assert active is not None
    assert (active.state, active.attempts, active.lease_deadline) == (
        "active", 1, job.lease_deadline)

    queue.fail(job, RuntimeError("first try"))
    delayed = queue.get_job(job_id)
    assert delayed is not None and delayed.error is not None
    assert (delayed.state, delayed.attempts, delayed.error.message) == (
        "delayed", 1, "first try")
    assert delayed.due_at == pytest.approx(clock.now + 10)

    clock.advance(10)
    [job] = queue.reserve()
    assert job.attempt == 2
    queue.fail(job, RuntimeError("second try"))
    dead = queue.get_job(job_id)
    assert dead is not None and dead.error is not None
    assert (dead.state, dead.attempts, dead.error.message) == ("dead", 2, "second try")
    assert dead.finished_at == pytest.approx(clock.now)


def test_an_acked_or_unknown_job_is_none(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    assert queue.get_job("never-added") is None
    job_id = queue.add("x")
    [job] = queue.reserve()
    queue.ack(job)
    assert queue.get_job(job_id) is None


def test_a_delayed_add_is_delayed_until_due(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("later", delay=60)
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.due_at) == ("delayed", clock.now + 60)
    clock.advance(60)
    assert queue.reserve() and (queue.get_job(job_id) or info).state == "active"


def test_an_active_job_is_told_apart_from_one_whose_id_ends_alike(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    queue.add("a", job_id="1:x")
    queue.add("b", job_id="x")
    [job] = queue.reserve()
    assert job.id == "1:x"
    found = queue.get_job("x")
    assert found is not None and found.state == "waiting"
    assert (queue.get_job("1:x") or found).state == "active"


def test_partitioned_queues_find_jobs_in_any_partition(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, partitions=3)
    automatic = queue.add_batch(["a", "b", "c"])
    keyed = queue.add("k", job_id="custom", partition_key="tenant-7")
    for job_id in [*automatic, keyed]:
        info = queue.get_job(job_id)
        assert info is not None and info.state == "waiting"
    partitions = {info.partition for job_id in automatic if (info := queue.get_job(job_id))}
    assert partitions == {0, 1, 2}


def test_a_bad_id_is_refused(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    for bad in (None, "", 42, "x" * 2000):
        with pytest.raises(ConfigurationError, match="job_id"):
            queue.get_job(bad)  # type: ignore[arg-type]
