"""BaseQueue against a real Redis, with a fake clock driving every time-dependent path; on the
sync and the asyncio driver (``api``), one server and a cluster."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
from redis.cluster import RedisCluster

from pyqcore import (
    Backoff,
    BaseQueue,
    ConfigurationError,
    EvictionPolicyWarning,
    LeaseLostError,
    NonRetryableError,
    Outcome,
    SerializationError,
)
from pyqcore.errors import LockNotAcquiredError, PayloadTooLargeError, ScriptError
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, Backend, FakeClock, all_keys
from tests.support.drivers import Api
from tests.support.invariants import primaries

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(5.0))
    return api.BaseQueue(client, name="q", clock=clock, **options)  # type: ignore[arg-type]


def test_add_then_reserve_returns_the_job_with_a_lease(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=30)
    job_id = queue.add({"to": "a@example.com"}, context={"user": 7})
    [job] = queue.reserve()
    assert (job.id, job.queue, job.payload, job.context) == (
        job_id, "q", {"to": "a@example.com"}, {"user": 7})
    assert job.attempt == 1
    assert job.enqueued_at == pytest.approx(clock.now)
    assert job.lease_deadline == pytest.approx(clock.now + 30)
    assert job.token
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 1, "dead": 0}


def test_batch_is_fifo_and_split_into_bounded_calls(api: Api, client: Client,
                                                    clock: FakeClock) -> None:
    queue = make(api, client, clock, batch_size=100)
    ids = queue.add_batch(range(250))
    assert len(set(ids)) == 250
    jobs = queue.reserve(count=250)
    assert [j.payload for j in jobs] == list(range(250))
    assert [j.id for j in jobs] == ids
    assert queue.ack(jobs) == 250
    assert queue.stats()["completed"] == 250


def test_add_with_an_existing_job_id_is_idempotent(api: Api, client: Client,
                                                   clock: FakeClock) -> None:
    queue = make(api, client, clock)
    assert queue.add({"v": 1}, job_id="order-42") == "order-42"
    assert queue.add({"v": 2}, job_id="order-42") == "order-42"
    assert queue.add_batch([{"v": 3}, {"v": 4}], job_ids=["order-42", "order-43"]) == [
        "order-42", "order-43"]
    ids = queue.add_batch(["a", "b", "c", "d"], job_ids=[None, "x", None, "x"])
    assert ids[1] == ids[3] == "x" and len(set(ids)) == 3  # one batch naming an id twice
    assert queue.counts()["ready"] == 5
    assert [j.payload for j in queue.reserve(count=9)] == [{"v": 1}, {"v": 4}, "a", "b", "c"]
    assert queue.stats()["added"] == 5


def test_automatic_ids_step_around_custom_ids(api: Api, client: Client, clock: FakeClock) -> None:
    """The count of jobs added numbers the automatic ids; a number a custom id already took
    gets a suffix, with one add or in a batch (where the custom id keeps its own id), and the
    count stays exact, so the next number is free again."""
    queue = make(api, client, clock)
    assert queue.add("custom", job_id="2") == "2"
    assert queue.add("one") == "2~1"
    assert queue.add_batch(["a", "b", "c"], job_ids=[None, "4", None]) == ["3", "4", "4~1"]
    assert queue.stats()["added"] == 5
    assert queue.add("next") == "6"
    jobs = queue.reserve(count=10)
    assert [(j.id, j.payload) for j in jobs] == [
        ("2", "custom"), ("2~1", "one"), ("3", "a"), ("4", "b"), ("4~1", "c"), ("6", "next")]


def test_odd_job_ids_are_kept_verbatim(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    odd = "tenant:{7}:ünïcode id/with spaces"
    queue.add("x", job_id=odd)
    [job] = queue.reserve()
    assert job.id == odd
    assert queue.ack(job) == 1


def test_delayed_job_becomes_ready_when_due(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add("later", delay=10)
    assert queue.counts()["delayed"] == 1
    assert queue.reserve() == []
    clock.advance(9.999)
    assert queue.reserve() == []
    clock.advance(0.001)
    [job] = queue.reserve()
    assert job.payload == "later"


def test_stale_token_cannot_ack_or_fail_after_the_lease_moved_on(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add("x")
    [first] = queue.reserve()
    clock.advance(10)
    [second] = queue.reserve()  # the expired lease was reclaimed and redelivered
    assert second.id == first.id
    assert second.attempt == 2 and second.token != first.token
    assert queue.ack(first) == 0
    with pytest.raises(LeaseLostError):
        queue.fail(first, RuntimeError("late"))
    assert queue.extend(first) == 0
    assert queue.counts()["leased"] == 1
    assert queue.ack(second) == 1
    assert queue.ack(second) == 0


def test_a_lease_is_its_exact_token_and_id(api: Api, client: Client, clock: FakeClock) -> None:
    """Leases are "token:id" members: a token of another shape, or one that would splice
    into another job's member, is refused; a job acked twice in one call counts once."""
    queue = make(api, client, clock)
    queue.add("x", job_id="a:b")
    queue.add("y", job_id="b")
    held = {job.id: job for job in queue.reserve(count=2)}
    token = held["a:b"].token
    assert len(token) == 16 and int(token, 16) >= 0
    spliced = dataclasses.replace(held["b"], token=f"{token[:15]}")  # too short
    forged = dataclasses.replace(held["b"], token=f"{token}:a")  # member "<token>:a:b"
    assert queue.ack([spliced, forged]) == 0
    assert queue.extend(forged) == 0 and queue.release(forged) == 0
    with pytest.raises(ScriptError, match="16 hex digits"):
        queue.fail(forged, RuntimeError("no"))
    with pytest.raises(LeaseLostError):
        queue.fail(dataclasses.replace(held["b"], token="0123456789abcdef"), RuntimeError("no"))
    assert queue.ack([held["a:b"], held["a:b"]]) == 1
    assert queue.ack(held["b"]) == 1
    assert queue.stats()["completed"] == 2


def test_a_batch_with_stale_leases_settles_exactly_the_held_ones(
    api: Api, client: Client, clock: FakeClock
) -> None:
    """ack and release of a batch in which some leases moved on: the held jobs are settled,
    the stale ones are refused, and the lease that replaced a stale one is untouched."""
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add_batch(["a", "b"])
    stale = queue.reserve(count=2)
    clock.advance(10)
    relet = queue.reserve(count=2)  # both expired and redelivered under a new token
    queue.add_batch(["c", "d", "e", "f"])
    held = queue.reserve(count=4)
    assert queue.ack([held[0], stale[0], held[1]]) == 2
    assert queue.release([stale[1], held[2], held[3]]) == 2
    leased = queue.keys.key("leased")
    assert client.zcount(leased, "-inf", 0) == 0  # nothing left at the check's mark
    assert queue.counts() == {"ready": 2, "delayed": 0, "leased": 2, "dead": 0}
    assert queue.ack(relet) == 2
    assert [(j.payload, j.attempt) for j in queue.reserve(count=5)] == [("e", 1), ("f", 1)]


def test_the_leased_set_is_never_a_listpack(api: Api, client: Client, clock: FakeClock) -> None:
    """A listpack ZSET scans itself for each member added or checked: the leased set keeps a
    pin member (over 64 bytes, scored +inf) so it stays a skiplist; counts leave it out."""
    queue = make(api, client, clock)
    queue.add_batch(range(3))
    jobs = queue.reserve(count=3)
    assert client.object("encoding", queue.keys.key("leased")) == b"skiplist"
    assert queue.counts()["leased"] == 3
    assert queue.ack(jobs) == 3
    assert queue.counts()["leased"] == 0


def test_calls_past_the_scripts_chunk_size(api: Api, client: Client, clock: FakeClock) -> None:
    """Scripts send variadic commands 1,000 items at a time (Lua's unpack limit is ~8,000):
    one enqueue of 2,500 jobs, duplicates included, one reserve and one ack of all of them."""
    queue = make(api, client, clock, batch_size=2500)
    job_ids = [None if i % 2 else f"c{i % 1500}" for i in range(2500)]
    ids = queue.add_batch(range(2500), job_ids=job_ids)
    unique = set(ids)
    assert len(unique) == 1250 + 750
    jobs = queue.reserve(count=2500)
    assert len(jobs) == len(unique) and {j.id for j in jobs} == unique
    assert queue.ack(jobs) == len(unique)
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_ack_of_an_expired_but_unclaimed_lease_is_accepted(api: Api, client: Client,
                                                           clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add("x")
    [job] = queue.reserve()
    clock.advance(60)  # expired, but no reserve has reclaimed it: nobody else has the job
    assert queue.ack(job) == 1
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_expired_last_delivery_goes_to_the_dead_letter_queue(api: Api, client: Client,
                                                             clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10, max_retries=1)
    queue.add("crashes its worker")
    for attempt in (1, 2):
        [job] = queue.reserve()
        assert job.attempt == attempt
        clock.advance(10)
    assert queue.reserve() == []
    assert queue.counts()["dead"] == 1
    error = json.loads(client.hget(queue.keys.key("errors"), job.id) or "null")
    assert error["type"] == "LeaseExpired"
    assert "delivery 2 of 2" in error["message"]


def test_fail_retries_with_backoff_then_buries(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=2, backoff=Backoff.fixed(5))
    queue.add("flaky")
    for attempt in (1, 2):
        [job] = queue.reserve()
        assert job.attempt == attempt
        assert queue.fail(job, ValueError(f"boom {attempt}")) is Outcome.RETRY
        with pytest.raises(LeaseLostError):  # that delivery is settled
            queue.fail(job, ValueError("again"))
        assert queue.counts()["delayed"] == 1
        clock.advance(4.999)
        assert queue.reserve() == []
        clock.advance(0.001)
    [job] = queue.reserve()
    assert job.attempt == 3
    assert queue.fail(job, ValueError("boom 3")) == "dead"
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}
    stats = queue.stats()
    assert (stats["retried"], stats["dead"]) == (2, 1)


def test_exponential_backoff_schedule(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=4,
                 backoff=Backoff.exponential(base=1, cap=5, jitter=0))
    queue.add("x")
    delays = []
    for _ in range(4):
        [job] = queue.reserve()
        queue.fail(job, RuntimeError())
        due = float(client.zscore(queue.keys.key("delayed"), job.id) or 0) / 1000
        delays.append(due - clock.now)
        clock.now = due
    assert delays == pytest.approx([1, 2, 4, 5])


def test_fail_without_retry_buries_at_once(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5)
    queue.add("x")
    [job] = queue.reserve()
    assert queue.fail(job, KeyError("gone"), retry=False) is Outcome.DEAD
    assert queue.counts()["dead"] == 1


def test_extend_keeps_a_long_job_leased(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, visibility_timeout=10)
    queue.add("long")
    [job] = queue.reserve()
    clock.advance(8)
    assert queue.extend(job, 10) == 1
    assert job.lease_deadline == pytest.approx(clock.now + 10)
    clock.advance(8)  # past the first deadline, before the extended one
    assert queue.reserve() == []
    assert queue.ack(job) == 1


def test_release_returns_unstarted_jobs_uncounted_to_the_front(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    queue.add_batch(["a", "b", "c"])
    taken = queue.reserve(count=2)
    assert queue.release(taken) == 2
    assert queue.ack(taken) == 0  # released: no longer held
    jobs = queue.reserve(count=3)
    assert [(j.payload, j.attempt) for j in jobs] == [("a", 1), ("b", 1), ("c", 1)]


def test_unserializable_item_in_a_batch_writes_nothing(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    queue = make(api, client, clock)
    with pytest.raises(SerializationError, match="set"):
        queue.add_batch([{"ok": 1}, {"bad": {1, 2}}, {"ok": 2}])
    with pytest.raises(SerializationError):
        queue.add(object())
    assert all_keys(client) == set()


def test_oversized_payload_is_refused_before_any_write(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    queue = make(api, client, clock, max_payload_bytes=1024)
    with pytest.raises(PayloadTooLargeError, match="1024"):
        queue.add_batch(["small", "x" * 2000])
    assert all_keys(client) == set()


def test_corrupt_record_goes_to_the_dead_letter_queue(api: Api, client: Client,
                                                      clock: FakeClock) -> None:
    queue = make(api, client, clock)
    good, bad = queue.add_batch(["good", "will be corrupted"])
    client.hset(queue.keys.key("jobs"), bad, b"\xc1 not msgpack")
    jobs = queue.reserve(count=2)
    assert [j.id for j in jobs] == [good]
    assert queue.counts()["dead"] == 1
    error = json.loads(client.hget(queue.keys.key("errors"), bad) or "null")
    assert error["type"] == "DeserializationError"


def test_record_missing_from_the_jobs_hash_is_dropped_and_counted(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("x")
    client.hdel(queue.keys.key("jobs"), job_id)
    assert queue.reserve() == []
    assert queue.stats()["orphaned"] == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_retries", -1), ("max_retries", 10**9), ("visibility_timeout", 0),
     ("visibility_timeout", float("nan")), ("batch_size", 0), ("name", "a{b}"), ("name", ""),
     ("max_payload_bytes", 0), ("backoff", 5)],
)
def test_bad_settings_are_refused(api: Api, client: Client, option: str, value: object) -> None:
    options = {"name": "ok", option: value}
    with pytest.raises(ConfigurationError):
        api.BaseQueue(client, **options)  # type: ignore[arg-type]


def test_bad_call_arguments_are_refused(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    with pytest.raises(ConfigurationError):
        queue.add("x", delay=-1)
    with pytest.raises(ConfigurationError):
        queue.add("x", job_id="")
    with pytest.raises(ConfigurationError):
        queue.reserve(count=-1)
    with pytest.raises(ConfigurationError):
        queue.add_batch(["a", "b"], job_ids=["only-one"])
    assert all_keys(client) == set()


def test_client_decoding_responses_is_refused(api: Api, backend: Backend) -> None:
    with pytest.raises(ConfigurationError, match="decode_responses"):
        api.BaseQueue(backend.client(decode_responses=True), name="q")


def test_evicting_server_is_warned_about_once(api: Api, backend: Backend, client: Client) -> None:
    # On the cluster one primary evicts, not the default node a plain CONFIG GET would ask:
    # one such node is enough to lose jobs.
    nodes = primaries(client)
    if isinstance(client, RedisCluster):
        default = client.get_default_node()  # type: ignore[no-untyped-call]
        nodes.remove(client.get_redis_connection(default))
    evicting = nodes[-1]
    evicting.config_set("maxmemory-policy", "allkeys-lru")
    try:
        other = backend.client()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            api.BaseQueue(other, name="a").add(1)  # the first add or reserve checks the server
            api.BaseQueue(other, name="b").add(2)
        assert [w.category for w in caught] == [EvictionPolicyWarning]
        assert "allkeys-lru" in str(caught[0].message)
    finally:
        evicting.config_set("maxmemory-policy", "noeviction")


def test_item_lock_is_exclusive_and_released_only_by_its_holder(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = make(api, client, clock)
    with queue.lock("user:7", ttl=30) as token:
        with pytest.raises(LockNotAcquiredError), queue.lock("user:7", wait=0):
            pass
        assert client.get(queue.keys.lock("user:7")) == token.encode()
    assert client.exists(queue.keys.lock("user:7")) == 0
    with queue.lock("user:7", wait=0):
        pass



def test_ack_clears_the_last_error_of_a_retried_job(api: Api, client: Client,
                                                    clock: FakeClock) -> None:
    queue = make(api, client, clock, backoff=Backoff.fixed(0))
    queue.add("x")
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))
    assert client.hexists(queue.keys.key("errors"), job.id)
    [job] = queue.reserve()
    assert job.attempt == 2
    assert queue.ack(job) == 1
    assert client.exists(queue.keys.key("errors")) == 0


def test_a_queue_of_either_driver_serves_one_queue_with_a_sync_one(
    api: Api, client: Client
) -> None:
    """Jobs, keys and scripts are the same on both drivers: a sync queue and one of the
    test's driver share a queue, and a lease is its token, whoever took it."""
    sync = BaseQueue(client, name="q")
    sync.add_batch(["from sync"] * 3)
    queue = api.BaseQueue(client, name="q")
    queue.add(f"from {api.name}")
    jobs = queue.reserve(count=2)
    assert [j.payload for j in jobs] == ["from sync", "from sync"]
    [taken] = sync.reserve()
    assert queue.ack([*jobs, taken]) == 3
    assert [j.payload for j in sync.reserve(count=5)] == [f"from {api.name}"]


def test_failing_by_hand_with_a_non_retryable_error_buries_the_job(api: Api,
                                                                   client: Client) -> None:
    """As a handler raising NonRetryableError does: straight to the DLQ, attempts left."""
    queue = api.BaseQueue(client, name="q", max_retries=5)
    queue.add("x")
    [job] = queue.reserve()
    assert queue.fail(job, NonRetryableError("bad input")) == Outcome.DEAD
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}
