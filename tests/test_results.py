"""Completed jobs kept (``keep_completed`` seconds, ``keep_completed_count``) and their
results (``store_results``): ``get_job`` of a completed job, the worker keeping what a handler
returned, trimming by count and by age inside the ack, re-adding a kept id, and the default
(nothing kept, no keys). On both drivers, one server and a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from pyqcore import BaseQueue, ConfigurationError, Job
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock | None, **options: Any) -> BaseQueue:
    return api.BaseQueue(client, name="results", clock=clock, **options)


def complete(queue: BaseQueue, result: Any = None) -> str:
    """Lease the next job and ack it as having returned ``result``; its id."""
    [job] = queue.reserve()
    job.result = result
    assert queue.ack(job) == 1
    return job.id


def test_a_completed_job_is_kept_with_its_result(api: Api, client: Client,
                                                   clock: FakeClock) -> None:
    queue = make(api, client, clock, keep_completed=60, store_results=True)
    job_id = queue.add({"a": 1}, context={"c": 2})
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))
    clock.advance(120)
    assert complete(queue, {"sum": 3}) == job_id
    info = queue.get_job(job_id)
    assert info is not None
    assert (info.state, info.payload, info.context, info.attempts, info.result) == (
        "completed", {"a": 1}, {"c": 2}, 2, {"sum": 3})
    assert info.finished_at == clock.now


def test_without_store_results_the_job_is_kept_but_not_its_result(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, keep_completed_count=10)
    job_id = queue.add("x")
    complete(queue, "ignored")
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.result) == ("completed", None)


def test_the_kept_jobs_are_trimmed_by_count(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, keep_completed_count=3, store_results=True)
    ids = queue.add_batch(range(5))
    for i in range(5):
        clock.advance(1)
        complete(queue, i)
    assert [queue.get_job(i) is not None for i in ids] == [False, False, True, True, True]


def test_the_kept_jobs_are_trimmed_by_age(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, keep_completed=10)
    old, new = queue.add("old"), queue.add("new")
    complete(queue)
    clock.advance(11)
    complete(queue)
    assert queue.get_job(old) is None
    assert (queue.get_job(new) or pytest.fail("new job gone")).state == "completed"


def test_a_kept_id_can_be_added_again(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, keep_completed=60, store_results=True)
    queue.add("first", job_id="order-42")
    complete(queue, "first result")
    assert queue.add("second", job_id="order-42") == "order-42"
    info = queue.get_job("order-42")
    assert info is not None and (info.state, info.payload) == ("waiting", "second")
    complete(queue, "second result")
    info = queue.get_job("order-42")
    assert info is not None and (info.payload, info.result) == ("second", "second result")


def test_the_worker_keeps_what_the_handler_returned(api: Api, client: Client) -> None:
    def double(job: Job) -> Any:
        return job.payload * 2

    queue = make(api, client, None, handler=double, keep_completed=60, store_results=True)
    ids = queue.add_batch([1, 2, 3])
    queue.process(burst=True)
    assert [(queue.get_job(i) or pytest.fail("gone")).result for i in ids] == [2, 4, 6]


def test_an_unserializable_result_is_not_kept_and_the_job_completes(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, keep_completed=60, store_results=True)
    job_id = queue.add("x", job_id="x")
    complete(queue, "kept")
    queue.add("x again", job_id="x")
    complete(queue, object())  # the first run's result must not pass for this one's
    info = queue.get_job(job_id)
    assert info is not None and (info.state, info.payload, info.result) == (
        "completed", "x again", None)


def test_nothing_is_kept_by_default(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("x")
    complete(queue, "ignored")
    assert queue.get_job(job_id) is None
    assert not {k for k in all_keys(client) if str(k).endswith(("completed", "kept", "results"))}


def test_store_results_needs_a_bound(api: Api, client: Client) -> None:
    with pytest.raises(ConfigurationError, match="keep_completed"):
        make(api, client, None, store_results=True)
    for bad in ({"keep_completed": -1}, {"keep_completed_count": 1.5}, {"store_results": "y"}):
        with pytest.raises(ConfigurationError):
            make(api, client, None, **bad)
