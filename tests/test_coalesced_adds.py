"""Concurrent adds on one queue object share script calls (``pyqcore.core.coalesce``): tasks
of one ``asyncio.gather`` on the asyncio API, threads sharing a queue on the sync API; on one
server and on a cluster. What Redis received is read from INFO commandstats, never from a
mock: a lone add is one EVALSHA; adds that arrive while ``ADDS_IN_FLIGHT`` calls are in
flight go together in the next one.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

from pyqcore import BaseQueue, SerializationError
from pyqcore.core.queue import ADDS_IN_FLIGHT
from pyqcore.errors import ConfigurationError, PayloadTooLargeError
from pyqcore.sync.driver import Client, SyncDriver, ThreadWaiter
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, primaries
from tests.support import wait_until
from tests.support.drivers import Api, at_once, in_thread

pytestmark = BOTH_DRIVERS_AND_BACKENDS

Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]
BUSY = [f"busy {i}" for i in range(ADDS_IN_FLIGHT)]  # the adds in flight while others arrive


def adds(payloads: list[Any], **options: Any) -> Calls:
    """``add(payload, **options)`` for each payload."""
    return [((payload,), dict(options)) for payload in payloads]


def evalsha_calls(client: Client) -> int:
    """EVALSHA calls on every primary since the last CONFIG RESETSTAT."""
    total = 0
    for node in primaries(client):
        stats: dict[str, Any] = node.info("commandstats")
        total += int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return total


def reset_stats(client: Client) -> None:
    for node in primaries(client):
        node.config_resetstat()


def stored(queue: BaseQueue) -> dict[str, Any]:
    """Every ready job of ``queue`` (all its partitions): id -> payload, read back by reserve."""
    jobs: dict[str, Any] = {}
    while batch := queue.reserve(count=10_000):
        jobs.update((job.id, job.payload) for job in batch)
    return jobs


def threads_in(code: CodeType) -> int:
    """How many threads are running ``code`` somewhere in their stack."""
    count = 0
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None and frame.f_code is not code:
            frame = frame.f_back
        count += frame is not None
    return count


@contextmanager
def writes_paused(client: Client) -> Iterator[None]:
    """Redis holds every write (an EVALSHA) until the block ends: what an add sends meanwhile
    stays in flight."""
    for node in primaries(client):
        node.client_pause(60_000, all=False)
    try:
        yield
    finally:
        for node in primaries(client):
            node.client_unpause()


def while_calls_are_in_flight(api: Api, client: Client, queue: BaseQueue,
                              others: Calls) -> list[Any]:
    """Send ``ADDS_IN_FLIGHT`` adds ("busy 0", ...) and, while their calls are in flight, the
    adds ``others``, concurrently; the results (or exceptions) of ``others`` in order. On
    asyncio, one gather: the first tasks' calls are in flight before any other task runs. On
    sync, Redis holds writes until the busy adds' threads wait in Redis and every other one
    waits for its turn (or has failed its checks)."""
    first = adds([f"busy {i}" for i in range(ADDS_IN_FLIGHT)])
    if api.name == "asyncio":
        return at_once(queue, "add", first + others)[ADDS_IN_FLIGHT:]
    with writes_paused(client):
        sent = [in_thread(queue.add, *args, **kwargs) for args, kwargs in first]
        wait_until(lambda: threads_in(SyncDriver.call.__code__) == ADDS_IN_FLIGHT, 30,
                   "the first adds waiting in Redis")
        rest = [in_thread(queue.add, *args, **kwargs) for args, kwargs in others]
        wait_until(lambda: threads_in(ThreadWaiter.wait.__code__)
                   + sum(f.done() for f in rest) == len(rest), 30,
                   "the other adds waiting for their turn")
    assert all(isinstance(outcome(f), str) for f in sent)
    return [outcome(f) for f in rest]


def outcome(future: Future[Any]) -> Any:
    """A finished call's result, or the exception it raised."""
    error = future.exception(30)
    return future.result() if error is None else error


def test_a_lone_add_is_one_script_call(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="q")
    queue.add("announces the queue")
    reset_stats(client)
    queue.add("one")
    assert evalsha_calls(client) == 1
    for i in range(10):  # one after the other: nothing waits, nothing is merged
        queue.add(i)
    assert evalsha_calls(client) == 11


def test_concurrent_adds_get_distinct_ids_and_are_all_stored(api: Api, client: Client) -> None:
    """1,000 adds at once, the first of the queue (which announces it once): on asyncio, on a
    client with redis-py's default pool of 100 connections, which one call per add would
    exhaust (MaxConnectionsError)."""
    queue = api.BaseQueue(client, name="q")
    payloads = [{"n": i} for i in range(1000)]
    ids = at_once(queue, "add", adds(payloads))
    assert all(isinstance(i, str) for i in ids), [i for i in ids if not isinstance(i, str)][:3]
    assert len(set(ids)) == 1000
    assert stored(queue) == dict(zip(ids, payloads, strict=True))
    assert queue.stats()["added"] == 1000


def test_adds_arriving_while_one_is_in_flight_go_together_in_the_next_call(
        api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="q")
    queue.add("announces the queue")
    reset_stats(client)
    ids = while_calls_are_in_flight(api, client, queue, adds([f"job {i}" for i in range(40)]))
    assert evalsha_calls(client) == ADDS_IN_FLIGHT + 1
    assert len(set(ids)) == 40
    assert sorted(stored(queue).values()) == sorted(
        ["announces the queue", *BUSY, *(f"job {i}" for i in range(40))])
    reset_stats(client)
    queue.add("alone again")
    assert evalsha_calls(client) == 1


def test_a_bad_add_among_merged_ones_fails_only_its_caller(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="q", max_payload_bytes=1000)
    queue.add("announces the queue")
    others = [*adds(["a", object(), "b", "x" * 2000, "c"]), (("d",), {"job_id": ""})]
    results = while_calls_are_in_flight(api, client, queue, others)
    assert [type(r) for r in results[1:6:2]] == [SerializationError, PayloadTooLargeError,
                                                 ConfigurationError]
    good = [results[0], results[2], results[4]]
    assert all(isinstance(i, str) for i in good) and len(set(good)) == 3
    assert sorted(stored(queue).values()) == sorted(["a", "announces the queue", "b", "c",
                                                     *BUSY])


def test_one_id_twice_in_a_merged_call_is_added_once(api: Api, client: Client) -> None:
    """Two callers naming one job id, in one merged call, behave as two adds one after the
    other: both get the id, the first one's job is stored, the second changes nothing."""
    queue = api.BaseQueue(client, name="q")
    queue.add("announces the queue")
    queue.add("already there", job_id="old")
    others: Calls = [(("x1",), {"job_id": "x"}), (("auto",), {}), (("x2",), {"job_id": "x"}),
                     (("old again",), {"job_id": "old"}), (("y",), {"job_id": "y"})]
    results = while_calls_are_in_flight(api, client, queue, others)
    assert results == ["x", results[1], "x", "old", "y"]
    jobs = stored(queue)
    assert jobs["old"] == "already there"
    assert jobs["x"] in ("x1", "x2")  # threads arrive in any order; a gather's tasks in order
    if api.name == "asyncio":
        assert jobs["x"] == "x1"
    assert sorted(jobs.values()) == sorted(["announces the queue", "already there", *BUSY,
                                            jobs["x"], "auto", "y"])
    assert queue.stats()["added"] == 5 + ADDS_IN_FLIGHT


def test_delayed_and_ready_adds_do_not_share_a_call(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="q")
    queue.add("announces the queue")
    reset_stats(client)
    others: Calls = [(("now",), {}), (("later",), {"delay": 60.0}), (("now too",), {})]
    results = while_calls_are_in_flight(api, client, queue, others)
    assert len(set(results)) == 3
    assert evalsha_calls(client) == ADDS_IN_FLIGHT + 2  # the two ready ones; the delayed one
    assert queue.counts() == {"ready": 3 + ADDS_IN_FLIGHT, "delayed": 1, "leased": 0,
                              "dead": 0}


def test_threads_sharing_a_queue_add_every_job_once(api: Api, client: Client) -> None:
    """Many producers at once, each adding in a loop (a web server's threads or tasks)."""
    queue = api.BaseQueue(client, name="q")
    per_producer = 50

    def produce(who: int) -> list[str]:
        return [queue.add({"who": who, "n": n}) for n in range(per_producer)]

    # On asyncio each thread's calls are tasks on the test's one loop, as a server's are.
    results = [f.result(60) for f in [in_thread(produce, who) for who in range(8)]]
    ids = [job_id for per in results for job_id in per]
    assert len(set(ids)) == 8 * per_producer
    assert len(stored(queue)) == 8 * per_producer


def test_a_queue_of_many_partitions_stays_within_two_calls_in_flight(
        api: Api, client: Client) -> None:
    """Calls in flight are counted for the whole queue object: a gather of 1,000 adds over
    200 partitions would need 400 connections at two a partition (a default pool holds 100)."""
    queue = api.BaseQueue(client, name="q", partitions=200)
    queue.add("announces the queue")
    reset_stats(client)
    ids = at_once(queue, "add", adds([f"job {i}" for i in range(1000)]))
    assert all(isinstance(i, str) for i in ids), [i for i in ids if not isinstance(i, str)][:3]
    assert len(set(ids)) == 1000
    if api.name == "asyncio":  # two alone, then a call per partition (a gather's order)
        assert evalsha_calls(client) <= ADDS_IN_FLIGHT + 200
    assert len(stored(queue)) == 1001


def test_a_partitioned_queue_merges_adds_per_partition(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="q", partitions=3)
    queue.add("announces the queue")
    reset_stats(client)
    keys = [f"k{i % 7}" for i in range(300)]
    ids = at_once(queue, "add", [((i,), {"partition_key": key}) for i, key in enumerate(keys)])
    assert len(set(ids)) == 300
    assert evalsha_calls(client) < 300
    got = stored(queue)
    assert [got[job_id] for job_id in ids] == list(range(300))
    partition_of: dict[str, str] = {}  # a numbered id names its partition: "2-17"
    for key, job_id in zip(keys, ids, strict=True):
        assert partition_of.setdefault(key, job_id.split("-")[0]) == job_id.split("-")[0]
