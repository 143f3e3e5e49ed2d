"""Memory pressure, on a real redis-server with ``maxmemory`` and ``noeviction``: an add that
does not fit writes nothing and raises QueueFullError (a batch of several script calls is
checked before its first write); ``max_ready`` refuses adds before Redis's limit; workers keep
reserving, acking, failing and releasing while Redis is out of memory; and a burst worker skips
ids whose record is gone (orphans), drains the rest and counts them. Both drivers.

The server is this module's own: each test sets its ``maxmemory`` (and the fixture puts it back
to no limit). "Out of memory" is made the way it happens: the queue's own jobs fill Redis, then
``maxmemory`` is lowered below what it uses, so every write that could grow it is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import OutOfMemoryError

from pyqcore import Job, Outcome, QueueFullError
from pyqcore.core.calls import PLAIN
from pyqcore.core.queue import ADDS_IN_FLIGHT
from pyqcore.errors import ConfigurationError
from tests.conftest import BOTH_DRIVERS
from tests.support import LocalRedis, wait_until
from tests.support.drivers import Api, at_once

pytestmark = BOTH_DRIVERS

MB = 2**20


@pytest.fixture(scope="module")
def noeviction_server() -> Iterator[LocalRedis]:
    with LocalRedis("--maxmemory-policy", "noeviction") as server:
        yield server


@pytest.fixture
def client(noeviction_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client of the module's server, emptied, with no memory limit until the test sets one
    (and none after it)."""
    conn = noeviction_server.client()
    conn.config_set("maxmemory", 0)
    conn.flushall()
    yield conn
    conn.config_set("maxmemory", 0)
    conn.flushall()
    conn.close()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def out_of_memory(client: redis.Redis) -> bool:
    """Whether Redis refuses a write that could grow it (a plain SET, outside pyqcore)."""
    try:
        client.set("probe", "x")
    except OutOfMemoryError:
        return True
    client.delete("probe")
    return False


def fill_then_run_out(client: redis.Redis, queue: object, jobs: int = 1500) -> list[str]:
    """Add ``jobs`` jobs of 2 KB, then lower maxmemory 1 MB below what Redis uses."""
    ids: list[str] = queue.add_batch([{"body": os.urandom(1000).hex()}  # type: ignore[attr-defined]
                                      for _ in range(jobs)])
    client.config_set("maxmemory", used_memory(client) - MB)
    assert out_of_memory(client)
    return ids


def payloads(count: int, size: int) -> list[dict[str, str]]:
    return [{"body": os.urandom(size // 2).hex()} for _ in range(count)]


# -- adds under memory pressure ------------------------------------------------------------------

def test_a_batch_that_does_not_fit_adds_nothing_and_says_why(api: Api,
                                                               client: redis.Redis) -> None:
    """The reported case: 4,000 jobs of 5 KB (four script calls of 1,000) under a maxmemory
    that holds about 2,000 of them. Before, the first two calls were written, the third raised
    redis-py's OutOfMemoryError and the caller got no ids."""
    client.config_set("maxmemory", used_memory(client) + 16 * MB)
    queue = api.BaseQueue(client, name="big")
    with pytest.raises(QueueFullError, match=r"^queue full: 4000 jobs of queue 'big' need about "
                       r"[\d.]+ MiB at the most, and Redis uses [\d.]+ MiB of its maxmemory"
                       ) as full:
        queue.add_batch(payloads(4000, 5000))
    assert full.value.ids == [None] * 4000
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    assert client.hlen(queue.keys.key("jobs")) == 0 and queue.stats() == {}
    # Half of it fits, and is added whole.
    assert len(queue.add_batch(payloads(2000, 5000))) == 2000
    assert queue.counts()["ready"] == 2000


def test_an_add_while_redis_is_out_of_memory_is_refused_and_writes_nothing(
    api: Api, client: redis.Redis
) -> None:
    queue = api.BaseQueue(client, name="full")
    fill_then_run_out(client, queue, jobs=500)
    before = queue.stats(), client.llen(queue.keys.key("ready"))
    with pytest.raises(QueueFullError, match=r"Redis is out of memory .* nothing was added"):
        queue.add({"to": "a@example.com"})
    with pytest.raises(QueueFullError, match="Redis is out of memory") as full:
        queue.add_batch(payloads(3, 10))  # one script call
    assert full.value.ids == [None, None, None]
    with pytest.raises(QueueFullError, match=r"queue full: 3000 jobs .* need about") as full:
        queue.add_batch(payloads(3000, 10))  # three calls: refused before the first
    assert full.value.ids == [None] * 3000
    assert (queue.stats(), client.llen(queue.keys.key("ready"))) == before


def test_lone_adds_refused_one_after_another_each_free_their_place(
    api: Api, client: redis.Redis
) -> None:
    """A lone add is a bare call whose place among the calls in flight the driver frees
    whatever its outcome (``pyqcore.core.coalesce``): refused adds, more of them than may be in
    flight, each raise at once, and the next add, once Redis has room, is stored."""
    queue = api.BaseQueue(client, name="lone")
    fill_then_run_out(client, queue, jobs=500)
    for i in range(ADDS_IN_FLIGHT + 2):  # one by one (a hang fails at_once's timeout)
        [refused] = at_once(queue, "add", [((f"refused {i}",), {})])
        assert isinstance(refused, QueueFullError), refused
    client.config_set("maxmemory", 0)
    assert isinstance(queue.add("fits"), str)
    assert queue.counts()["ready"] == 501


def test_concurrent_adds_sharing_calls_are_each_refused(api: Api, client: redis.Redis) -> None:
    """Adds that arrive together go in shared enqueue calls (``pyqcore.core.coalesce``): a
    refused call refuses every add it carried, each with QueueFullError."""
    queue = api.BaseQueue(client, name="together")
    fill_then_run_out(client, queue, jobs=500)
    results = at_once(queue, "add", [((f"job {i}",), {}) for i in range(50)])
    assert [type(r) for r in results] == [QueueFullError] * 50
    assert queue.counts()["ready"] == 500


def test_enqueue_calls_refused_for_memory_come_back_as_values_from_one_round_trip(
    api: Api, client: redis.Redis
) -> None:
    """What tells a batch's flow which of its calls were written: each refused call's reply,
    in its place, as a QueueFullError (the driver's pipeline path, without the room check)."""
    queue = api.BaseQueue(client, name="trip")
    fill_then_run_out(client, queue, jobs=500)
    part = queue.core.partitions.parts[0]
    calls = part.add(payloads(4, 10), [None] * 4, PLAIN, [None] * 4)[:1] * 2
    replies = queue.driver.call_all(calls)
    assert [type(r) for r in replies] == [QueueFullError, QueueFullError]


def test_a_new_queue_object_starts_on_a_full_redis(api: Api, client: redis.Redis) -> None:
    """A worker restarted while Redis is full must still drain it: its queue's first call
    announces it (SADD, refused), and falls back to reading what is recorded."""
    fill_then_run_out(client, api.BaseQueue(client, name="restart", partitions=2), jobs=500)
    fresh = api.BaseQueue(client, name="restart", partitions=2)
    assert len(fresh.reserve(count=3)) == 3
    with pytest.raises(ConfigurationError, match="partitions=2"):
        api.BaseQueue(client, name="restart", partitions=3).reserve()


# -- max_ready -----------------------------------------------------------------------------------

def test_max_ready_refuses_adds_past_the_jobs_waiting(api: Api, client: redis.Redis) -> None:
    queue = api.BaseQueue(client, name="capped", max_ready=5, batch_size=2)
    queue.add_batch(range(3))
    queue.add("later", delay=60.0)  # delayed jobs wait too: 4 waiting
    with pytest.raises(QueueFullError, match=r"^queue full: 4 jobs are waiting \(ready \+ "
                       r"delayed\): 2 more would pass max_ready=5; nothing was added$"):
        queue.add_batch(["x", "y"])  # one script call: the script refuses it whole
    with pytest.raises(QueueFullError, match=r"4 jobs waiting .* 3 more would pass max_ready=5"):
        queue.add_batch(["x", "y", "z"])  # two calls: refused before the first
    assert queue.counts() == {"ready": 3, "delayed": 1, "leased": 0, "dead": 0}
    queue.add("fifth")
    with pytest.raises(QueueFullError, match="5 jobs are waiting"):
        queue.add("sixth")
    [job] = queue.reserve()  # a leased job no longer waits
    assert queue.add("sixth")
    queue.ack(job)
    assert queue.counts() == {"ready": 4, "delayed": 1, "leased": 0, "dead": 0}
    assert queue.stats()["added"] == 6


def test_max_ready_keeps_custom_ids(api: Api, client: redis.Redis) -> None:
    queue = api.BaseQueue(client, name="ids", max_ready=4, batch_size=2)
    assert queue.add("a", job_id="order-1") == "order-1"
    assert queue.add_batch(["b", "c", "d"], job_ids=["order-2", None, "order-3"]) == [
        "order-2", "2", "order-3"]
    with pytest.raises(QueueFullError):
        queue.add("e", job_id="order-4")
    assert sorted(j.id for j in queue.reserve(count=4)) == ["2", "order-1", "order-2", "order-3"]


def test_max_ready_counts_per_partition(api: Api, client: redis.Redis) -> None:
    queue = api.BaseQueue(client, name="parts", max_ready=2, partitions=2)
    queue.add_batch(range(4))  # round robin: two per partition
    with pytest.raises(QueueFullError, match=r"partition [01] of queue 'parts' has 2 jobs"):
        queue.add_batch(range(2))
    assert queue.counts()["ready"] == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10", 2**53])
def test_a_bad_max_ready_is_refused(api: Api, client: redis.Redis, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_ready"):
        api.BaseQueue(client, name="q", max_ready=bad)  # type: ignore[arg-type]


def test_max_ready_is_a_class_setting_too(api: Api, client: redis.Redis) -> None:
    class Capped(api.BaseQueue):  # type: ignore[name-defined,misc]
        name = "class-capped"
        max_ready = 1

    queue = Capped(client)
    assert queue.max_ready == 1
    queue.add("one")
    with pytest.raises(QueueFullError):
        queue.add("two")


# -- workers under memory pressure ---------------------------------------------------------------

def test_reserve_ack_fail_release_extend_and_locks_work_while_out_of_memory(
    api: Api, client: redis.Redis
) -> None:
    queue = api.BaseQueue(client, name="drain", max_retries=1)
    fill_then_run_out(client, queue)
    jobs = queue.reserve(count=4)
    assert [j.attempt for j in jobs] == [1, 1, 1, 1]
    assert queue.ack(jobs[0]) == 1
    assert queue.extend(jobs[1], 60.0) == 1
    assert queue.release(jobs[1]) == 1
    assert queue.fail(jobs[2], RuntimeError("retry me")) is Outcome.RETRY
    assert queue.fail(jobs[3], RuntimeError("bury me"), retry=False) is Outcome.DEAD
    with queue.lock("user:7"):
        pass
    assert out_of_memory(client)
    assert queue.counts() == {"ready": 1497, "delayed": 1, "leased": 0, "dead": 1}


def test_due_jobs_are_promoted_while_out_of_memory(api: Api, client: redis.Redis) -> None:
    """A reserve whose first write is promoting a due job (RPUSH, refused to a script without
    allow-oom while Redis is full)."""
    queue = api.BaseQueue(client, name="due")
    queue.add("soon", delay=0.05)
    fill_then_run_out(client, api.BaseQueue(client, name="ballast"))
    jobs: list[Job] = []

    def leased() -> bool:  # once the due time has passed
        jobs.extend(queue.reserve())
        return bool(jobs)

    wait_until(leased, 10, "the due job to be promoted and leased")
    assert [j.payload for j in jobs] == ["soon"]
    assert out_of_memory(client)


def test_a_burst_worker_drains_a_queue_while_redis_is_out_of_memory(
    api: Api, client: redis.Redis
) -> None:
    queue = api.BaseQueue(client, name="burst", handler=lambda job: None)
    ids = fill_then_run_out(client, queue)
    report = queue.process(burst=True, install_signal_handlers=False)
    assert report.acked == len(ids) and report.lease_lost == 0
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    assert not out_of_memory(client)  # the drained records freed it


# -- orphans: ids whose record was evicted or deleted --------------------------------------------

def test_a_burst_worker_skips_orphans_and_drains_the_rest(api: Api, client: redis.Redis) -> None:
    """The reported case: orphans at the head of ready. Before, the first reserve dropped the
    orphan it took, replied with no job, and burst mode stopped with 29 of 30 ids left."""
    done: list[str] = []
    queue = api.BaseQueue(client, name="orphans", handler=lambda job: done.append(job.id))
    ids = queue.add_batch(range(40))
    client.hdel(queue.keys.key("jobs"), *ids[:30])  # evicted: 30 orphans at the head
    report = queue.process(burst=True, install_signal_handlers=False)
    assert sorted(done) == sorted(ids[30:]) and report.acked == 10
    assert queue.stats()["orphaned"] == 30
    assert client.llen(queue.keys.key("ready")) == 0


def test_reserve_goes_past_more_orphans_than_one_call_drops(api: Api,
                                                              client: redis.Redis) -> None:
    """A reserve drops at most sweep_limit (1,000) orphans; one that took only orphans says
    more ids are ready, and the flow asks again."""
    queue = api.BaseQueue(client, name="many")
    ids = queue.add_batch(range(2500))
    client.hdel(queue.keys.key("jobs"), *ids[:2400])
    jobs = queue.reserve(count=2)
    assert [j.payload for j in jobs] == [2400, 2401]
    assert queue.stats()["orphaned"] == 2400
