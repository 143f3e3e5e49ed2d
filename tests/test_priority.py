"""Priorities: higher first, FIFO within a priority, kept through retries, releases, expired
leases, redrives and delays; on the sync and the asyncio driver, one server and a cluster."""

from __future__ import annotations

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, QueueManager
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(5.0))
    return api.BaseQueue(client, name="p", clock=clock, **options)  # type: ignore[arg-type]


def payloads(queue: BaseQueue, count: int = 100) -> list[object]:
    return [job.payload for job in queue.reserve(count=count)]


def test_higher_priority_first_and_fifo_within_a_priority(api: Api, client: Client,
                                                          clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add("zero-a")
    queue.add("low", priority=-5)
    queue.add("five-a", priority=5)
    queue.add("zero-b")
    queue.add_batch(["five-b", "five-c"], priority=5)
    queue.add_batch(["bottom"], priority=-1000)
    queue.add("top", priority=1000)
    queue.add("low-b", priority=-5)
    assert queue.counts()["ready"] == 9
    assert payloads(queue, 4) == ["top", "five-a", "five-b", "five-c"]
    assert payloads(queue) == ["zero-a", "zero-b", "low", "low-b", "bottom"]
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 9, "dead": 0}


def test_a_job_keeps_its_priority_through_retry_and_release(api: Api, client: Client,
                                                            clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5)
    queue.add("plain")
    queue.add_batch(["a", "b"], priority=2)
    [a] = queue.reserve()
    queue.fail(a, RuntimeError("again"))  # 5 s backoff, then at the back of priority 2
    queue.add("c", priority=2)
    clock.advance(5)
    jobs = queue.reserve(count=10)
    assert [j.payload for j in jobs] == ["b", "c", "a", "plain"]
    assert queue.release(jobs[1:]) == 3  # back at the front of their kind, in the order given
    queue.add("d", priority=2)
    assert payloads(queue) == ["c", "a", "d", "plain"]


def test_a_job_released_again_and_again_stays_at_the_front(api: Api, client: Client,
                                                          clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add_batch(["head", "b", "c"], priority=2)
    for _ in range(4):  # each release goes ahead of the jobs added before it too
        [head] = queue.reserve()
        assert head.payload == "head"
        queue.release(head)
    assert payloads(queue) == ["head", "b", "c"]


def test_a_reclaimed_job_goes_back_to_the_front_of_its_priority(api: Api, client: Client,
                                                                clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add_batch(["x", "y"], priority=2)
    queue.add("p")
    assert payloads(queue) == ["x", "y", "p"]
    queue.add("z", priority=2)
    queue.add("q")
    clock.advance(10)  # the three leases expire
    jobs = queue.reserve(count=10)
    assert [(j.payload, j.attempt) for j in jobs] == [
        ("x", 2), ("y", 2), ("z", 1), ("p", 2), ("q", 1)]


def test_a_redriven_job_keeps_its_priority(manager: QueueManager, clock: FakeClock) -> None:
    queue = manager.register("p", max_retries=0, backoff=Backoff.fixed(0))
    queue.add("doomed", priority=-3)
    [doomed] = queue.reserve()
    queue.fail(doomed, RuntimeError("no"))
    queue.add_batch(["first", "second"], priority=-3)
    queue.add("plain")
    assert manager.dead_letter_queue.requeue("p") == 1
    assert [j.payload for j in queue.reserve(count=10)] == ["plain", "first", "second", "doomed"]
    queue.add("purged", priority=7, group="g")
    [purged] = queue.reserve()
    queue.fail(purged, RuntimeError("no"))
    assert manager.dead_letter_queue.purge("p") == 1  # its attrs go with it (checked after)


def test_a_delayed_job_enters_at_its_priority_when_due(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add("later", delay=10, priority=9)
    queue.add("now")
    assert payloads(queue) == ["now"]
    queue.add_batch(["zero", "zero-2"])
    queue.add("one", priority=1)
    clock.advance(10)
    assert payloads(queue) == ["later", "one", "zero", "zero-2"]


def test_a_bad_priority_or_group_is_refused_before_any_write(api: Api, client: Client,
                                                             clock: FakeClock) -> None:
    queue = make(api, client, clock)
    for bad in (1001, -1001, 1.5, True, "1", None):
        with pytest.raises(ConfigurationError, match="priority"):
            queue.add("x", priority=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="priority"):
            queue.add_batch(["x", "y"], priority=bad)  # type: ignore[arg-type]
    for bad_group in ("", "a b", "tab\there", 7, "x" * 201, "new\nline"):
        with pytest.raises(ConfigurationError, match="group"):
            queue.add("x", group=bad_group)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="group"):
            queue.add_batch(["x"], group=bad_group)  # type: ignore[arg-type]
    assert not [k for k in all_keys(client) if b"{p}" in (k if isinstance(k, bytes)
                                                            else k.encode())]
