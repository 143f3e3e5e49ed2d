"""Cancelling jobs: a waiting or delayed job is deleted at once (``cancel`` answers True and
no handler ever starts it); an active one is marked, its heartbeat reports it (``job.cancelled``)
and no longer renews its lease, and a failure or an expired lease deletes it; ``cancel_many``
and ``clear``. A cancel racing a reserve never both answers True and delivers the job. On a
queue that keeps finished jobs a cancelled job is kept as cancelled (``get_job``, ``result``),
trimmed with the completed ones. On both drivers, one server and a cluster."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, Job, JobCancelledError, JobInfo, Outcome
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support import wait_until
from tests.support.drivers import Api, in_thread

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock | None, **options: Any) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(0))
    return api.BaseQueue(client, name="cancel", clock=clock, **options)


def stat(queue: BaseQueue, name: str) -> int:
    return queue.stats().get(name, 0)


def test_waiting_and_delayed_jobs_are_deleted(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    now, later, kept = queue.add("now"), queue.add("later", delay=60), queue.add("kept")
    assert queue.cancel(now) is True
    assert queue.cancel(later) is True
    assert queue.cancel(now) is False  # gone already
    assert queue.get_job(now) is None and queue.get_job(later) is None
    clock.advance(60)
    assert [job.id for job in queue.reserve(10)] == [kept]
    assert stat(queue, "cancelled") == 2


def test_dead_and_unknown_jobs_are_left_alone(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=0)
    job_id = queue.add("poison")
    [job] = queue.reserve()
    assert queue.fail(job, RuntimeError("boom")) is Outcome.DEAD
    assert queue.cancel(job_id) is False
    assert queue.cancel("nobody") is False
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.cancel_requested) == ("dead", False)


def test_an_active_job_is_marked_and_its_lease_no_longer_renewed(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("long")
    [job] = queue.reserve(visibility_timeout=30)
    deadline = job.lease_deadline
    assert queue.cancel(job_id) is False  # it runs already: only marked
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.cancel_requested) == ("active", True)
    assert job.cancelled is False
    clock.advance(10)
    assert queue.extend(job) == 0  # held, but not renewed
    assert (job.cancelled, job.lease_deadline) == (True, deadline)
    assert queue.cancel(job_id) is False  # marked once


def test_a_cancelled_active_job_that_fails_is_deleted_not_retried(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=5)
    job_id = queue.add("x")
    [job] = queue.reserve()
    queue.cancel(job_id)
    assert queue.fail(job, RuntimeError("stopped")) is Outcome.CANCELLED
    assert queue.get_job(job_id) is None and queue.reserve() == []
    assert stat(queue, "cancelled") == 1


def test_a_cancelled_active_job_whose_lease_expires_is_deleted(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=5)
    job_id, other = queue.add("hung"), queue.add("other")
    [job] = queue.reserve(visibility_timeout=5)
    queue.cancel(job_id)
    clock.advance(6)
    assert [j.id for j in queue.reserve(10)] == [other]  # the cancelled one is not redelivered
    assert queue.get_job(job_id) is None
    assert queue.ack(job) == 0


def test_a_cancelled_active_job_that_is_acked_completes(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("x")
    [job] = queue.reserve()
    queue.cancel(job_id)
    assert queue.ack(job) == 1
    assert queue.get_job(job_id) is None and stat(queue, "completed") == 1


def test_cancel_many_answers_per_id(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, partitions=2)
    ids = queue.add_batch(range(250))
    active = queue.add("active", job_id="busy", partition_key="p")
    [job] = queue.reserve(1)
    asked = [*ids[:240], "unknown", job.id]
    done = queue.cancel_many(asked)
    assert done[-2:] == [False, False]
    assert done[:240] == [i != job.id for i in ids[:240]]
    left = {info.id for j in [*ids, active] if (info := queue.get_job(j))}
    assert left == {*ids[240:], active, job.id}
    with pytest.raises(ConfigurationError):
        queue.cancel_many(["ok", ""])
    assert queue.get_job(ids[-1]) is not None  # the bad batch wrote nothing


def test_clear_deletes_every_waiting_job_and_leaves_active_and_dead_ones(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=0, partitions=2)
    queue.add_batch(["dead", "active"])
    [dead] = queue.reserve()
    queue.fail(dead, RuntimeError("x"))
    [active] = queue.reserve()
    queue.add_batch(range(2500))
    queue.add_batch(range(10), delay=60)
    assert queue.clear() == 2510
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 1, "dead": 1}
    assert queue.ack(active) == 1


def test_a_handler_sees_job_cancelled_after_a_heartbeat(api: Api, client: Client) -> None:
    seen: list[Job] = []
    started = threading.Event()

    def handler(job: Job) -> None:
        started.set()
        wait_until(lambda: job.cancelled, 30, "the heartbeat to report the cancel")
        seen.append(job)

    queue = make(api, client, None, handler=handler, visibility_timeout=0.6)
    job_id = queue.add("long")
    worker = api.Worker(queue, idle_wait=0.2)
    running = in_thread(worker.run, install_signal_handlers=False)
    try:
        assert started.wait(30)
        assert queue.cancel(job_id) is False
        wait_until(lambda: bool(seen), 30, "the handler to return")
    finally:
        worker.stop.set()
        running.result(30)
    assert [job.id for job in seen] == [job_id]
    assert queue.get_job(job_id) is None  # the handler returned: acked


def test_a_job_with_its_own_retry_limit_keeps_it_through_a_cancel_mark(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=0)
    job_id = queue.add("x", max_retries=3)
    [job] = queue.reserve()
    queue.cancel(job_id)
    info = queue.get_job(job_id)
    assert info is not None and (info.attempts, info.cancel_requested) == (1, True)
    assert queue.fail(job, RuntimeError("stopped")) is Outcome.CANCELLED
    assert queue.get_job(job_id) is None


def test_a_cancelled_active_job_given_back_unstarted_is_deleted(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    job_id, other = queue.add("cancelled"), queue.add("other")
    jobs = queue.reserve(2)
    queue.cancel(job_id)
    assert queue.release(jobs) == 2
    assert [j.id for j in queue.reserve(10)] == [other]
    assert queue.get_job(job_id) is None and stat(queue, "cancelled") == 1


# -- kept as cancelled: a queue with keep_completed / keep_completed_count ---------------------

KEEP: dict[str, Any] = {"keep_completed_count": 10, "store_results": True}


def cancelled(queue: BaseQueue, job_id: str) -> JobInfo:
    """``get_job`` of a job kept as cancelled (asserted), whose ``result()`` raises at once."""
    info = queue.get_job(job_id)
    assert info is not None and info.state == "cancelled", info
    if queue.settings.store_results:
        with pytest.raises(JobCancelledError):
            queue.result(job_id, timeout=0)
    return info


@pytest.mark.parametrize("keep", [KEEP, {"keep_completed": 60}], ids=["results", "age"])
def test_a_cancelled_waiting_or_delayed_job_is_kept_as_cancelled(
    api: Api, client: Client, clock: FakeClock, keep: dict[str, Any]
) -> None:
    queue = make(api, client, clock, **keep)
    retried = queue.add({"n": 1}, context={"c": 2})
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))  # back to ready with one attempt
    later = queue.add("later", delay=60)
    clock.advance(5)
    assert queue.cancel_many([retried, later]) == [True, True]
    for job_id, payload, attempts in ((retried, {"n": 1}, 1), (later, "later", 0)):
        info = cancelled(queue, job_id)
        assert (info.payload, info.attempts, info.finished_at, info.result, info.error) == (
            payload, attempts, clock.now, None, None)
    assert queue.get_job(retried) is not None and queue.cancel(retried) is False
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_a_job_cancelled_while_running_is_kept_as_cancelled_when_its_run_ends(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, max_retries=5, **KEEP)
    failed, expired, released = queue.add("f"), queue.add("e"), queue.add("r")
    jobs = queue.reserve(3, visibility_timeout=5)
    clock.advance(1)
    cancelled_at = clock.now
    assert queue.cancel_many([failed, expired, released]) == [False] * 3
    for job_id in (failed, expired, released):  # the live job wins while it runs
        info = queue.get_job(job_id)
        assert info is not None and (info.state, info.cancel_requested) == ("active", True)
    by_id = {job.id: job for job in jobs}
    assert queue.fail(by_id[failed], RuntimeError("stopped")) is Outcome.CANCELLED
    assert queue.release([by_id[released]]) == 1
    clock.advance(5)
    assert queue.reserve(10) == []  # the expired lease is reclaimed: deleted, not redelivered
    for job_id in (failed, expired, released):
        info = cancelled(queue, job_id)
        assert (info.attempts, info.finished_at, info.cancel_requested) == (1, cancelled_at,
                                                                            False)


def test_a_cancelled_running_job_that_returns_is_kept_as_completed(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, **KEEP)
    job_id = queue.add("x")
    [job] = queue.reserve()
    queue.cancel(job_id)
    job.result = "done anyway"
    assert queue.ack(job) == 1
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.result) == ("completed", "done anyway")
    assert queue.result(job_id, timeout=0) == "done anyway"


def test_clear_keeps_the_jobs_it_deletes_as_cancelled(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, partitions=2, keep_completed_count=100, store_results=True)
    ids = queue.add_batch(range(4)) + queue.add_batch(range(4, 6), delay=60)
    clock.advance(2)
    assert queue.clear() == 6
    assert [cancelled(queue, i).payload for i in ids] == list(range(6))
    assert {cancelled(queue, i).finished_at for i in ids} == {clock.now}


def test_kept_cancelled_jobs_are_trimmed_with_the_completed_ones_by_count(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, keep_completed_count=3, store_results=True)
    ids = queue.add_batch(range(4))
    for job_id in ids:
        clock.advance(1)
        queue.cancel(job_id)
    assert [queue.get_job(i) is not None for i in ids] == [False, True, True, True]
    done = queue.add("completed")
    clock.advance(1)
    [job] = queue.reserve()
    assert queue.ack(job) == 1  # a completion trims the oldest cancelled one
    assert [queue.get_job(i) is not None for i in [*ids, done]] == [False] * 2 + [True] * 3
    queue.add("cancelled")
    queue.clear()  # and a clear's trims the oldest
    assert queue.get_job(ids[2]) is None and queue.get_job(done) is not None


def test_a_cancelled_id_can_be_added_again(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, **KEEP)
    queue.add("first", job_id="order-42")
    assert queue.cancel("order-42") is True
    assert queue.add("second", job_id="order-42") == "order-42"  # the live job wins
    info = queue.get_job("order-42")
    assert info is not None and (info.state, info.payload) == ("waiting", "second")
    [job] = queue.reserve()
    job.result = "second result"
    queue.ack(job)
    assert queue.result("order-42", timeout=0) == "second result"
    queue.add("third", job_id="order-42")
    queue.cancel("order-42")  # the completed entry is replaced, its result with it
    assert cancelled(queue, "order-42").payload == "third"


def test_a_queue_that_keeps_nothing_keeps_no_cancelled_job(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    running, waiting = queue.add("r"), queue.add("w")
    [job] = queue.reserve()
    cleared = queue.add("cleared")
    assert queue.cancel_many([waiting, running]) == [True, False]
    assert queue.fail(job, RuntimeError("x")) is Outcome.CANCELLED
    assert queue.clear() == 1
    assert [queue.get_job(i) for i in (running, waiting, cleared)] == [None] * 3
    assert not {k for k in all_keys(client) if str(k).endswith(("completed", "kept", "results"))}
