"""On a real Redis Cluster: every script call of a queue names exactly one hash slot, a call
whose KEYS span two queues is refused with CROSSSLOT before it writes anything, and scripts are
(re)loaded on the primary that runs them.

These are the properties that let pyqcore run unchanged on a cluster: each transition is one
atomic script, and the cluster can only run a script atomically when all its KEYS live in one
slot of one node.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from pyqcore import Job, QueueManager
from pyqcore.core.calls import Call, QueueCalls, lock_call, unlock_call
from pyqcore.keys import QueueKeys
from pyqcore.schedule import Schedule
from pyqcore.scripts import load_scripts
from pyqcore.settings import QueueSettings
from tests.conftest import FakeClock, all_keys
from tests.support import LocalRedisCluster
from tests.support.invariants import primaries

SCRIPTS = load_scripts()
QUEUE_NAMES = ["emails", "q", "a:b", "tenant-7/jobs", "ünïcode", "x" * 200]


@pytest.fixture
def cluster(redis_cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    conn = redis_cluster.client()
    conn.flushall()
    yield conn
    conn.close()


def every_call(queue: str) -> list[Call[Any]]:
    """One call of every script of ``queue``, built the way the queue builds them."""
    calls = QueueCalls(QueueSettings(name=queue))
    events = QueueCalls(QueueSettings(name=queue, events=True))
    lock_key = QueueKeys("pyqcore", queue).lock("user:7")
    token = "0123456789abcdef"
    built: list[Call[Any]] = [
        calls.enqueue([""], [b"record"]),
        calls.reserve(1, visibility_ms=1000, max_attempts=4, sweep_limit=1000, token=token),
        calls.ack([("1", token)]),
        calls.fail("1", token, max_attempts=4, backoff_ms=0, error_json="{}", retryable=True),
        calls.extend(1000, [("1", token)]),
        calls.release([("1", token)]),
        calls.redrive(3),
        calls.purge(),
        calls.peek_dead(0, 10),
        calls.counts(),
        calls.room(),
        calls.read_schedules(["s"], 10),
        calls.claim_schedule(Schedule("s", queue, every=60), 60_000, 120_000, [60_000]),
        calls.job_info("1"),
        calls.job_result("1"),
        calls.cancel(["1", "2"]),
        calls.clear(),
        QueueCalls(QueueSettings(name=queue, keep_completed_count=10)).finish(
            [Job("1", queue, None, None, 1, 0.0, "ab" * 8, 0.0)]),
        calls.pause(True, "tenant-7"),
        # with events: the stream, as the last key, is in the queue's slot too
        events.enqueue([""], [b"record"]),
        events.reserve(1, visibility_ms=1000, max_attempts=4, sweep_limit=1000, token=token),
        events.ack([("1", token)]),
        # keeping finished jobs: cancel and clear send the kept keys (before the stream)
        QueueCalls(QueueSettings(name=queue, keep_completed=60, events=True)).cancel(["1"]),
        QueueCalls(QueueSettings(name=queue, keep_completed_count=10)).clear(),
        lock_call(lock_key, "token", 1000),
        unlock_call(lock_key, "token"),
    ]
    return built


def owner(cluster: RedisCluster, key: str) -> ClusterNode:
    """The primary serving ``key``'s slot, from the client's slot map."""
    node: ClusterNode = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
    return node


def primary_nodes(cluster: RedisCluster) -> list[ClusterNode]:
    nodes: list[ClusterNode] = cluster.get_primaries()  # type: ignore[no-untyped-call]
    return nodes


def tag_slot(queue: str) -> int:
    """The slot of queue ``queue``'s hash tag."""
    return key_slot(f"{{{queue}}}".encode())


def snapshot(client: RedisCluster) -> dict[bytes | str, bytes | None]:
    """Every key of the cluster with its serialized value (DUMP), to prove nothing changed."""
    found: dict[bytes | str, bytes | None] = {}
    for node in primaries(client):
        for key in node.keys("*"):
            found[key] = node.dump(key)
    return found


def test_every_script_of_a_queue_is_covered() -> None:
    assert {call.script.name for call in every_call("emails")} == set(SCRIPTS)


@pytest.mark.parametrize("queue", QUEUE_NAMES)
def test_every_call_of_a_queue_lands_in_the_queues_one_slot(cluster: RedisCluster,
                                                            queue: str) -> None:
    slot = tag_slot(queue)
    for call in every_call(queue):
        slots = {key_slot(key.encode()) for key in call.keys}
        assert slots == {slot}, (call.script.name, call.keys)
    # the server agrees with the client's CRC16 for the queue's keys
    ready = QueueKeys("pyqcore", queue).key("ready")
    served_by = cluster.get_redis_connection(owner(cluster, ready))
    assert served_by.cluster("KEYSLOT", ready) == slot


def two_queues_on_one_node(cluster: RedisCluster) -> tuple[str, str, ClusterNode]:
    """Two queue names in different slots served by the same primary: a call mixing their
    keys reaches a node that owns every key, so only the slot rule can refuse it."""
    by_node: dict[str, list[str]] = {}
    for i in range(200):
        name = f"q{i}"
        node = owner(cluster, f"{{{name}}}")
        names = by_node.setdefault(node.name, [])
        if names and tag_slot(names[0]) != tag_slot(name):
            return names[0], name, node
        names.append(name)
    raise AssertionError("no two queues share a primary")


@pytest.mark.parametrize("script", sorted(n for n, s in SCRIPTS.items() if len(s.key_parts) > 1))
def test_a_call_with_keys_of_two_queues_fails_with_crossslot_and_writes_nothing(
    cluster: RedisCluster, clock: FakeClock, script: str
) -> None:
    first, second, node = two_queues_on_one_node(cluster)
    manager = QueueManager(cluster, clock=clock)
    for name in (first, second):  # both queues hold jobs in every state
        queue = manager.register(name)
        queue.add_batch(range(4))
        queue.add("later", delay=60)
        leased = queue.reserve(count=2)
        queue.fail(leased[0], RuntimeError("x"), retry=False)
    good = next(c for c in every_call(first) if c.script.name == script)  # (without events)
    theirs = QueueKeys("pyqcore", second).keys(good.script.key_parts)
    mixed = [*good.keys[:-1], theirs[-1]]  # the last KEYS entry belongs to the other queue
    holder = cluster.get_redis_connection(node)
    holder.script_load(good.script.source)  # so the refusal cannot be NOSCRIPT
    before = snapshot(cluster)
    with pytest.raises(ClusterCrossSlotError):  # the server's -CROSSSLOT reply
        holder.evalsha(good.script.sha, len(mixed), *mixed, *good.args)
    with pytest.raises(RedisClusterException, match="same key slot"):  # the client refuses too
        cluster.evalsha(good.script.sha, len(mixed), *mixed, *good.args)
    assert snapshot(cluster) == before


def flush_scripts(cluster: RedisCluster) -> None:
    """SCRIPT FLUSH on every primary, as if each had restarted."""
    for node in primaries(cluster):
        node.script_flush()


def loaded_on(cluster: RedisCluster, sha: str) -> set[str]:
    """The names of the primaries whose script cache holds ``sha``."""
    return {node.name for node in primary_nodes(cluster)
            if cluster.get_redis_connection(node).script_exists(sha) == [True]}


def test_noscript_in_a_cross_node_pipeline_loads_only_where_the_script_runs(
    cluster: RedisCluster, clock: FakeClock
) -> None:
    manager = QueueManager(cluster, clock=clock)
    names: dict[str, str] = {}  # node name -> a queue living there
    for i in range(200):
        names.setdefault(owner(cluster, f"{{n{i}}}").name, f"n{i}")
    assert len(names) == 3, names  # one queue per primary: the pipeline spans every node
    for name in names.values():
        manager.register(name).add_batch(range(3))
    sha = SCRIPTS["counts"].sha
    flush_scripts(cluster)
    sizes = manager.monitor_queue_sizes(process_dead_letters=False)
    assert sizes == {name: {"ready": 3, "delayed": 0, "leased": 0, "dead": 0}
                     for name in names.values()}
    assert loaded_on(cluster, sha) == set(names)  # each node ran (and reloaded) its queue's call
    # a single call reloads on its own slot's primary only
    flush_scripts(cluster)
    queue = manager.get_queue(next(iter(names.values())))
    assert queue.counts()["ready"] == 3
    assert loaded_on(cluster, sha) == {owner(cluster, queue.keys.key("ready")).name}


def test_all_keys_of_a_busy_queue_share_one_slot(cluster: RedisCluster, clock: FakeClock) -> None:
    queue = QueueManager(cluster, clock=clock).register("busy")
    queue.add_batch(range(10))
    queue.add("later", delay=60)
    jobs = queue.reserve(count=3)
    queue.fail(jobs[0], RuntimeError("x"), retry=False)
    queue.fail(jobs[1], RuntimeError("y"))
    with queue.lock("item"):
        keys = all_keys(cluster) - {b"pyqcore:queues"}
        assert {key_slot(k if isinstance(k, bytes) else k.encode()) for k in keys} == {
            tag_slot("busy")}
        assert len(keys) >= 8  # ready, delayed, leased, dead, jobs, meta, errors, stats, lock
