"""The database check run after every test (``tests.support.invariants``) finds each kind of
break it promises, names the key and the ids, and finds nothing in a healthy queue."""

from __future__ import annotations

from typing import cast

import pytest
import redis

from pyqcore import BaseQueue, QueueManager
from tests.conftest import FakeClock
from tests.support.invariants import Partition, database_problems

pytestmark = pytest.mark.inconsistent_state("it breaks queues on purpose to check the checker")


@pytest.fixture
def queue(client: redis.Redis, clock: FakeClock) -> BaseQueue:
    """A queue with a job in every state (one of them with a history and an error)."""
    queue = BaseQueue(client, name="q", clock=clock, max_retries=0, partitions=2)
    queue.add_batch(["dead", "leased", "ready", "spare"], partition_keys=["k"] * 4)
    [dead] = queue.reserve()
    queue.fail(dead, RuntimeError("boom"))
    queue.reserve()
    queue.add("later", delay=60)
    assert database_problems(client) == []
    return queue


def test_a_healthy_database_has_no_problem(client: redis.Redis, queue: BaseQueue,
                                           clock: FakeClock) -> None:
    jobs = queue.reserve(count=2)
    queue.ack(jobs[:1])
    queue.release(jobs[1:])
    QueueManager(client, clock=clock).dead_letter_queue.purge("q", max_age=0)
    client.set("unrelated", "x")
    client.set(queue.keys.lock("item"), "holder")
    assert database_problems(client) == []


def key(client: redis.Redis, part: str, at_least: int = 1) -> str:
    """The one partition's ``part`` key holding at least ``at_least`` entries."""
    size = {"jobs": client.hlen, "dead": client.zcard, "leased": client.zcard}[part]
    [found] = [k.decode() for k in cast(list[bytes], client.keys(f"*:{part}"))
               if size(k) >= at_least]
    return found


def members(client: redis.Redis, key: str) -> list[bytes]:
    return cast(list[bytes], client.zrange(key, 0, -1))


def only(client: redis.Redis) -> str:
    [problem] = database_problems(client)
    return problem


def test_a_record_left_by_a_finished_job(client: redis.Redis, queue: BaseQueue) -> None:
    jobs = key(client, "jobs", 2)
    client.hset(jobs, "gone", b"record")
    assert only(client) == (f"{jobs}: 1 records of jobs in no state (finished jobs "
                            "left behind?): ['gone']")


@pytest.mark.parametrize("part", ["meta", "errors"])
def test_a_history_or_error_without_its_job(client: redis.Redis, queue: BaseQueue,
                                            part: str) -> None:
    client.hset(key(client, "jobs", 2).replace(":jobs", f":{part}"), "gone", "x")
    assert "jobs that are gone: ['gone']" in only(client) and f":{part}:" in only(client)


def test_a_job_in_two_states_and_a_state_without_a_record(client: redis.Redis,
                                                          queue: BaseQueue) -> None:
    dead = key(client, "dead")
    job_id = members(client, dead)[0].decode()
    client.rpush(dead.replace(":dead", ":ready"), job_id, "ghost")
    base = dead.removesuffix(":dead")
    assert database_problems(client) == [
        f"{base}: job {job_id} is ready and dead",
        f"{base}: 1 jobs in a state without a record: [('ghost', 'ready')]"]


def test_a_lease_at_the_settling_mark_twice_and_a_second_wake_marker(
    client: redis.Redis, queue: BaseQueue
) -> None:
    leased = key(client, "leased", 2)
    [member] = [m for m in members(client, leased) if not m.startswith(b"~")]
    client.zadd(leased, {member: -1, b"f" * 16 + member[16:]: 5})
    client.rpush(leased.replace(":leased", ":wake"), "1", "1")
    problems = " ".join(database_problems(client))
    assert "a lease left at the settling mark" in problems
    assert "is leased twice" in problems
    assert "wake-up markers (at most one)" in problems


def test_counts_that_disagree_with_the_keys() -> None:
    """(Only a broken counts.lua disagrees with the keys, so the check is shown on a reading.)"""
    part = Partition("pyqcore:{q}", states={"ready": {"1": 0.0}, "delayed": {}, "leased": {},
                                            "dead": {}}, records={"1"},
                     counted={"ready": 1, "delayed": 0, "leased": 1, "dead": 0})
    assert part.check() == ["pyqcore:{q}: counts.lua says {'ready': 1, 'delayed': 0, "
                            "'leased': 1, 'dead': 0}, the keys hold {'ready': 1, 'delayed': 0, "
                            "'leased': 0, 'dead': 0}"]


def test_a_clobbered_key(client: redis.Redis, queue: BaseQueue) -> None:
    leased = key(client, "leased", 2)
    client.delete(leased)
    client.set(leased, "clobbered")
    assert "its keys cannot be read" in only(client) and "WRONGTYPE" in only(client)


def test_an_events_entry_carrying_a_payload_or_an_unknown_event(client: redis.Redis,
                                                                clock: FakeClock) -> None:
    watched = BaseQueue(client, name="watched", clock=clock, events=True)
    watched.add("x")
    assert database_problems(client) == []
    stream = "pyqcore:{watched}:events"
    client.xadd(stream, {"event": "added", "id": "2", "attempt": "0", "payload": "secret"})
    client.xadd(stream, {"event": "teleported", "id": "3", "attempt": "0"})
    [problem] = database_problems(client)
    assert problem.startswith(f"{stream}: 2 malformed entries")
    client.delete(stream)
    client.set(stream, "clobbered")
    assert database_problems(client) == [f"{stream}: not a stream"]


def test_a_kept_entry_of_the_wrong_shape_and_a_result_of_a_cancelled_job(
    client: redis.Redis, clock: FakeClock
) -> None:
    queue = BaseQueue(client, name="kept", clock=clock, keep_completed_count=10,
                      store_results=True)
    queue.cancel(queue.add("x", job_id="gone"))
    assert database_problems(client) == []
    client.hset(queue.keys.key("results"), "gone", "a result")
    assert "results of 1 jobs kept as cancelled: ['gone']" in only(client)
    client.hdel(queue.keys.key("results"), "gone")
    client.hset(queue.keys.key("kept"), "gone", "x:record")
    assert "kept: entries of the wrong shape: ['gone']" in only(client)
    client.delete(queue.keys.key("kept"), queue.keys.key("completed"))
