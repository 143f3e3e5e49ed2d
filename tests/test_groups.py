"""Groups: round robin across the groups with ready jobs, group_concurrency (k = 1: one at a
time, in order), group_rate_limit, a group at its limit not holding up the others,
pause_group, group_counts; on the sync and the asyncio driver, one server and a cluster."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import pytest

from pyqcore import Backoff, BaseQueue, GroupCounts, Job
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api, in_thread
from tests.support.waiting import wait_for
from tests.test_worker import blocked_on_blpop

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(0))
    return api.BaseQueue(client, name="g", clock=clock, **options)  # type: ignore[arg-type]


def payloads(queue: BaseQueue, count: int = 100) -> list[Any]:
    return [job.payload for job in queue.reserve(count=count)]


def test_groups_are_served_in_turn_with_the_jobs_of_no_group(api: Api, client: Client,
                                                             clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add_batch(["a1", "a2", "a3"], group="a")
    queue.add_batch(["b1", "b2"], group="b")
    queue.add_batch(["x1", "x2", "x3"])
    queue.add("a-top", group="a", priority=5)  # first of its group, not of the queue
    assert queue.counts()["ready"] == 9
    assert payloads(queue, 7) == ["a-top", "b1", "x1", "a1", "b2", "x2", "a2"]
    assert payloads(queue) == ["x3", "a3"]


def test_twenty_jobs_of_b_behind_5000_of_a_start_within_40_deliveries(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    queue = make(api, client, clock)
    queue.add_batch([["a", i] for i in range(5000)], group="A")
    queue.add_batch([["b", i] for i in range(20)], group="B")
    delivered: list[list[object]] = []
    while len(delivered) < 60:
        delivered += payloads(queue, 7)  # workers lease in batches: the turns run across them
    positions = [i + 1 for i, (group, _) in enumerate(delivered) if group == "b"]
    assert len(positions) == 20 and max(positions) <= 40, positions
    for group, count in (("b", 20), ("a", len(delivered) - 20)):  # each in its own order
        assert [p for p in delivered if p[0] == group] == [[group, i] for i in range(count)]


def test_fairness_under_a_real_worker(api: Api, client: Client, clock: FakeClock) -> None:
    order: list[str] = []
    queue = make(api, client, clock, handler=lambda job: order.append(job.payload[0]))
    queue.add_batch([("a", i) for i in range(2000)], group="A")
    queue.add_batch([["b", i] for i in range(20)], group="B")
    queue.process(concurrency=1, max_jobs=100, prefetch=10)
    assert order.count("b") == 20 and order.index("b") < 2
    assert max(i for i, g in enumerate(order) if g == "b") < 40 + 10  # plus one prefetched batch


def test_group_concurrency_one_runs_a_group_one_job_at_a_time_in_order(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    queue = make(api, client, clock, group_concurrency=1)
    queue.add_batch(["g1", "g2", "g3"], group="g")
    queue.add_batch(["h1", "h2"], group="h")
    queue.add("free")
    first = queue.reserve(count=10)
    assert [j.payload for j in first] == ["g1", "h1", "free"]
    assert queue.reserve(count=10) == []  # both groups hold their one lease
    assert client.zcard(queue.keys.key("groups")) == 0  # so they are out of the round robin
    assert queue.group_counts() == {"g": GroupCounts(ready=2, active=1, paused=False),
                                    "h": GroupCounts(ready=1, active=1, paused=False)}
    queue.ack(first[0])
    assert payloads(queue) == ["g2"]
    queue.fail(first[1], RuntimeError("retry"))  # h1 back at the end of h, h's lease ends
    assert payloads(queue) == ["h2"]


def test_an_add_to_a_group_at_its_concurrency_does_not_spend_another_groups_turn(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    queue = make(api, client, clock, group_concurrency=1)
    queue.add("g1", group="g")
    [g1] = queue.reserve()
    queue.add("g2", group="g")  # g holds its one lease: the add leaves it out of the round robin
    queue.add("h1", group="h")
    assert client.zrange(queue.keys.key("groups"), 0, -1) == [b"h"]
    assert payloads(queue, 1) == ["h1"]  # a one-job lease goes to h, not to g's empty turn
    queue.ack(g1)
    assert payloads(queue) == ["g2"]


def test_a_group_at_its_rate_limit_does_not_spend_another_groups_turn(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    queue = make(api, client, clock, group_rate_limit=(1, 10.0))
    queue.add("g1", group="g")
    assert payloads(queue) == ["g1"]  # g's last job, and its window's one start
    queue.add("g2", group="g")  # an add arms g: reserve finds it at its limit
    queue.add("h1", group="h")
    assert payloads(queue, 1) == ["h1"]  # so g takes no turn: the next group does
    assert payloads(queue) == []
    clock.advance(10.001)
    assert payloads(queue) == ["g2"]


@pytest.mark.parametrize("g2_added", ["before", "after"])  # g1's lease took g's last job
def test_a_worker_waits_for_a_group_under_its_limit_and_an_ack_wakes_it(
    api: Api, client: Client, patient_client: Client, clock: FakeClock, g2_added: str,
) -> None:
    ran: list[str] = []
    queue = make(api, patient_client, clock, group_concurrency=1,
                 handler=lambda job: ran.append(job.payload))
    queue.add_batch(["g1", "g2"] if g2_added == "before" else ["g1"], group="g")
    [g1] = queue.reserve()
    if g2_added == "after":
        queue.add("g2", group="g")
    # A burst worker does not stop while jobs wait for their group's limit: it waits.
    run = in_thread(queue.process, burst=True, idle_wait=30.0, install_signal_handlers=False)
    wait_for(lambda: blocked_on_blpop(client))
    queue.ack(g1)  # g is back under its limit: the ack wakes the worker (no 30 s wait)
    assert run.result(15).acked == 1
    assert ran == ["g2"]


def test_a_burst_worker_does_not_wait_for_a_group_at_its_limit_with_nothing_ready(
    api: Api, client: Client, patient_client: Client, clock: FakeClock,
) -> None:
    queue = make(api, patient_client, clock, group_concurrency=1, handler=lambda job: None)
    queue.add("g1", group="g")
    [g1] = queue.reserve()  # g's last job: g is at its limit with nothing left ready
    run = in_thread(queue.process, burst=True, idle_wait=30.0, install_signal_handlers=False)
    try:
        assert run.result(15).acked == 0  # nothing waits for g's limit: it stops at once
    finally:
        queue.ack(g1)  # (else wakes a worker that waits)


def test_group_concurrency_holds_for_a_fleet_and_keeps_each_groups_order(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    lock = threading.Lock()
    running: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    started: dict[str, list[int]] = defaultdict(list)

    def handler(job: Job) -> None:
        group, number = job.payload
        with lock:
            running[group] += 1
            peak[group] = max(peak[group], running[group])
            started[group].append(number)
        with lock:
            running[group] -= 1

    queues = [make(api, client, clock, handler=handler, group_concurrency=1) for _ in range(3)]
    for group in "abcd":
        queues[0].add_batch([(group, i) for i in range(30)], group=group)
    # Three workers at once; in burst mode a slot whose groups are all busy waits for one of
    # them to finish instead of stopping.
    runs = [in_thread(q.process, concurrency=3, burst=True, idle_wait=0.1) for q in queues]
    reports = [run.result(60) for run in runs]
    assert sum(r.acked for r in reports) == 120
    assert max(peak.values()) == 1
    assert all(started[g] == list(range(30)) for g in "abcd"), started


def test_a_group_at_its_rate_limit_does_not_hold_up_the_others(api: Api, client: Client,
                                                              clock: FakeClock) -> None:
    queue = make(api, client, clock, group_rate_limit=(2, 1.0))
    queue.add_batch([f"a{i}" for i in range(10)], group="a")
    queue.add_batch(["b1", "b2", "b3"], group="b")
    queue.add_batch(["x1", "x2", "x3"])
    assert payloads(queue) == ["a0", "b1", "x1", "a1", "b2", "x2", "x3"]
    assert payloads(queue) == []
    waiting = client.zrange(queue.keys.key("gwait"), 0, -1, withscores=True)
    assert sorted(waiting) == [(b"a", clock.now_ms() + 1001), (b"b", clock.now_ms() + 1001)]
    assert client.zcard(queue.keys.key("groups")) == 0  # nobody in the round robin
    queue.add("x4")
    queue.add("a10", group="a")  # an add does not take a waiting group out of gwait
    assert client.zcard(queue.keys.key("groups")) == 0
    assert payloads(queue) == ["x4"]
    clock.advance(1.0)
    assert payloads(queue) == []  # a window's both ends count
    clock.advance(0.001)
    assert payloads(queue) == ["a2", "b3", "a3"]


@pytest.mark.parametrize("held_by", ["pause", "max_active"])
def test_a_worker_held_back_is_not_told_to_call_again_for_a_groups_passed_window(
    api: Api, client: Client, clock: FakeClock, held_by: str,
) -> None:
    limits = {"max_active": 1} if held_by == "max_active" else {}
    queue = make(api, client, clock, group_rate_limit=(1, 1.0), **limits)
    queue.add_batch(["a1", "a2"], group="a")
    [a1] = queue.reserve()  # a waits out its window in gwait
    if held_by == "pause":
        queue.pause()
        queue.ack(a1)
    clock.advance(5.0)  # a's window passed, but nothing starts before a resume or a lease's end
    reservation = queue.driver.run(queue.core.partitions.parts[0].lease(1))
    expected = None if held_by == "pause" else 25_000  # a1's lease deadline, not 0: no polling
    assert (reservation.jobs, reservation.wait_ms) == ([], expected)
    if held_by == "pause":
        queue.resume()
    else:
        queue.ack(a1)
    assert payloads(queue) == ["a2"]


def test_a_group_with_nothing_ready_leaves_the_round_robin(api: Api, client: Client,
                                                           clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add_batch(range(3), group="busy")
    queue.add("once", group="idle")
    assert len(queue.reserve(count=2)) == 2
    assert client.zrange(queue.keys.key("groups"), 0, -1) == [b"busy"]
    assert set(queue.group_counts()) == {"busy", "idle"}  # idle still holds a lease
    queue.ack(queue.reserve(count=5))
    assert client.zcard(queue.keys.key("groups")) == 0


def test_pause_group_holds_one_group_back(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add_batch(["a1", "a2"], group="a")
    queue.add_batch(["b1", "b2"], group="b")
    assert queue.pause_group("a") is True
    assert queue.pause_group("a") is False  # already paused
    queue.add("a3", group="a")
    assert payloads(queue) == ["b1", "b2"]
    assert queue.group_counts()["a"] == GroupCounts(ready=3, active=0, paused=True)
    assert queue.resume_group("a") is True
    assert payloads(queue) == ["a1", "a2", "a3"]
    assert queue.group_counts() == {"b": GroupCounts(ready=0, active=2, paused=False),
                                    "a": GroupCounts(ready=0, active=3, paused=False)}


def test_a_groups_jobs_share_a_partition_so_its_limits_hold(api: Api, client: Client,
                                                            clock: FakeClock) -> None:
    queue = make(api, client, clock, partitions=3, group_concurrency=1)
    for i in range(6):
        queue.add(i, group="g")
    parts = {job.partition for _ in range(3) for job in queue.reserve(count=10)}
    assert len(parts) == 1  # one lease at a time, wherever the reserve starts


def test_cancel_and_clear_take_ranked_jobs_out_of_their_group(api: Api, client: Client,
                                                               clock: FakeClock) -> None:
    queue = make(api, client, clock)
    ids = queue.add_batch(["g1", "g2", "g3"], group="g")
    queue.add("later", group="g", delay=60, priority=3)
    queue.add_batch(["h1", "h2"], group="h", priority=2)
    assert queue.cancel(ids[1]) is True  # a ready job of a group: deleted, g keeps g1 and g3
    assert queue.group_counts()["g"].ready == 2
    assert [j.payload for j in queue.reserve(count=10)] == ["g1", "h1", "g3", "h2"]
    assert queue.clear() == 1  # the delayed one (its attrs go with it: checked after the test)
    queue.add_batch(["x1", "x2"], group="x")
    queue.add("y1", priority=-1)
    assert queue.clear() == 3
    assert queue.counts()["ready"] == 0 and client.zcard(queue.keys.key("groups")) == 0


def test_a_queue_keeping_completed_jobs_ends_its_groups_leases(api: Api, client: Client,
                                                                clock: FakeClock) -> None:
    queue = make(api, client, clock, group_concurrency=1, keep_completed_count=10)
    queue.add_batch(["g1", "g2"], group="g")
    [g1] = queue.reserve(count=5)
    assert queue.reserve(count=5) == []
    assert queue.ack(g1) == 1  # through complete.lua: g is back under its limit
    assert [j.payload for j in queue.reserve(count=5)] == ["g2"]
    assert not client.hexists(queue.keys.key("attrs"), g1.id)
