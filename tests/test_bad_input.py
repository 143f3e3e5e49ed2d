"""Every bad input gets a typed pyqcore error before anything is written (issue "Reliability
II"): each case below raises ConfigurationError or SerializationError, never OverflowError,
TypeError, AttributeError, IndexError or a script's refusal, and leaves Redis empty."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, Job, QueueManager, SerializationError
from pyqcore.job import DeadLetterItem
from pyqcore.sync.driver import Client
from tests.conftest import FakeClock, all_keys

INF, NAN = math.inf, math.nan


def leased_job() -> Job:
    return Job("1", "q", None, None, 1, 0.0, "ab" * 8, 30.0, 0)


def dead_item(partition: int) -> DeadLetterItem:
    return DeadLetterItem(queue="q", job_id="1", payload=None, context=None, error=None,
                          failed_at=0.0, attempts=1, redrives=0, enqueued_at=None, record=None,
                          partition=partition)


CASES: dict[str, Callable[[BaseQueue, QueueManager], Any]] = {
    "delay=inf": lambda q, m: q.add("x", delay=INF),
    "delay=nan": lambda q, m: q.add("x", delay=NAN),
    "delay=1e13 (past ten years)": lambda q, m: q.add("x", delay=1e13),
    "add_batch delay=inf": lambda q, m: q.add_batch(["x"], delay=INF),
    "reserve(visibility_timeout=inf)": lambda q, m: q.reserve(visibility_timeout=INF),
    "reserve(count=10**20)": lambda q, m: q.reserve(count=10**20),
    "extend(job, inf)": lambda q, m: q.extend(leased_job(), INF),
    "lock(ttl=inf)": lambda q, m: q.lock("k", ttl=INF).__enter__(),
    "lock(ttl=0)": lambda q, m: q.lock("k", ttl=0).__enter__(),
    "lock(wait=nan)": lambda q, m: q.lock("k", wait=NAN).__enter__(),
    "Backoff.fixed(inf)": lambda q, m: Backoff.fixed(INF),
    "Backoff.exponential(cap=nan)": lambda q, m: Backoff.exponential(cap=NAN),
    "register(max_retry=5), a typo": lambda q, m: m.register("other", max_retry=5),
    "BaseQueue(visibilty_timeout=1), a typo": lambda q, m: BaseQueue(
        q.client, name="q", visibilty_timeout=1),  # type: ignore[call-arg]
    "add({frozenset(): 3}), a key type with no MessagePack form": lambda q, m: q.add(
        {frozenset(): 3}),
    "add(partition_key=5)": lambda q, m: q.add("x", partition_key=5),  # type: ignore[arg-type]
    "add_batch(partition_keys=[5])": lambda q, m: q.add_batch(
        ["x"], partition_keys=[5]),  # type: ignore[list-item]
    'ack("1"), an id instead of a Job': lambda q, m: q.ack("1"),  # type: ignore[arg-type]
    "ack([1])": lambda q, m: q.ack([1]),  # type: ignore[list-item]
    "fail(job, None)": lambda q, m: q.fail(leased_job(), None),  # type: ignore[arg-type]
    'fail("1", error)': lambda q, m: q.fail("1", ValueError()),  # type: ignore[arg-type]
    "dlq purge max_age=-1": lambda q, m: m.dead_letter_queue.purge("q", max_age=-1),
    "dlq purge max_age=nan": lambda q, m: m.dead_letter_queue.purge("q", max_age=NAN),
    "dlq processing max_age=-1": lambda q, m: m.dead_letter_queue.process_dead_letter_queue(
        max_age=-1),
    "dlq items limit=-1": lambda q, m: m.dead_letter_queue.items("q", limit=-1),
    "reprocess_item of a partition the queue lacks": lambda q, m:
        m.dead_letter_queue.reprocess_item(dead_item(5)),
    "process(prefetch=10**9)": lambda q, m: q.process(prefetch=10**9),
    "process(idle_wait=inf)": lambda q, m: q.process(idle_wait=INF),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_a_typed_error_and_writes_nothing(client: Client, clock: FakeClock,
                                                       case: str) -> None:
    manager = QueueManager(client, clock=clock)
    queue = manager.register("q", handler=lambda job: None)
    with pytest.raises((ConfigurationError, SerializationError)):
        CASES[case](queue, manager)
    assert all_keys(client) == set()


def test_a_bad_job_in_a_large_batch_is_named_by_its_position(client: Client) -> None:
    queue = BaseQueue(client, name="q")
    payloads: list[object] = list(range(1_500))
    payloads[1_234] = {"tags": {1, 2}}
    expected = r"job 1234 of the batch of 1500: payload: \$\.tags: cannot serialize set"
    with pytest.raises(SerializationError, match=expected):
        queue.add_batch(payloads)
    assert all_keys(client) == set()


def test_a_tuple_map_key_is_delivered_as_it_was_added(client: Client) -> None:
    """Once accepted and then undecodable on delivery; the decoder now rebuilds tuple keys."""
    queue = BaseQueue(client, name="q")
    queue.add({(1, ("a", 2)): 3})
    [job] = queue.reserve()
    assert job.payload == {(1, ("a", 2)): 3}
