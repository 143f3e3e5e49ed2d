"""The queue's flows without Redis: which calls each one sends, in which round trips, and what
it makes of the replies (pyqcore.core.queue)."""

from __future__ import annotations

import time
from typing import cast

import pytest
from redis.exceptions import OutOfMemoryError, ResponseError

from pyqcore.codes import Code
from pyqcore.core.effects import flow_of
from pyqcore.core.queue import QueueCore
from pyqcore.errors import ConfigurationError, QueueFullError, SerializationError
from pyqcore.job import Job
from pyqcore.serializer import MSGPACK
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock
from tests.core.dialog import Dialog, announced, names, record, reserved, room, server_time

NOW = 1_800_000_000.0


def core(partitions: int = 1, *, cluster: bool = False, announce: bool = False,
         max_ready: int | None = None) -> QueueCore:
    settings = QueueSettings(name="q", partitions=partitions, batch_size=2,  # the server's clock
                             max_ready=max_ready)
    queue = QueueCore(settings, cluster=cluster)
    queue.announced = not announce
    return queue


def job(job_id: str, partition: int = 0, token: str = "ab" * 8) -> Job:
    return Job(job_id, "q", None, None, 1, NOW, token, NOW + 30, partition)


def test_the_first_add_announces_the_queue_then_enqueues() -> None:
    flow = Dialog(core(announce=True).add_batch(["a", "b", "c"]))
    assert names(flow.round()) == ["SADD", "HGET", "TIME"]
    flow.answer(announced())
    assert names(flow.round()) == ["room"]  # two calls: room for all of it first
    flow.answer([room()])
    assert names(flow.round()) == ["enqueue", "enqueue"]  # batch_size=2: two calls, one trip
    flow.answer([[0, b"1,2"], [0, b"3"]])
    assert flow.result == ["1", "2", "3"]


def test_a_batch_the_room_check_refuses_sends_no_enqueue() -> None:
    flow = Dialog(core(max_ready=10).add_batch(["a", "b", "c"]))
    [check] = flow.round()
    assert check.script.name == "room"
    with pytest.raises(QueueFullError, match=r"8 jobs waiting.*3 more would pass max_ready=10"
                       ) as refused:
        flow.answer([room(8)])
    assert refused.value.ids == [None, None, None]


def test_a_batch_that_would_pass_maxmemory_sends_no_enqueue() -> None:
    flow = Dialog(core().add_batch(["a" * 1000, "b" * 1000, "c" * 1000]))
    flow.round()
    with pytest.raises(QueueFullError, match="3 jobs of queue 'q' need about"):
        flow.answer([room(used=100_000, maxmemory=103_000)])


def test_a_batch_with_room_is_sent_whole() -> None:
    flow = Dialog(core(max_ready=10).add_batch(["a", "b", "c"]))
    flow.answer([room(7, used=100_000, maxmemory=200_000)])
    assert names(flow.round()) == ["enqueue", "enqueue"]


def test_a_call_refused_after_the_room_check_leaves_the_ids_of_the_others() -> None:
    flow = Dialog(core().add_batch(["a", "b", "c"]))
    flow.answer([room()])
    with pytest.raises(QueueFullError, match="only 2 of the batch's 3 jobs were added") as full:
        flow.answer([[Code.OK, b"1,2"], OutOfMemoryError("command not allowed when ...")])
    assert full.value.ids == ["1", "2", None]


def test_a_single_call_refused_for_max_ready_adds_nothing() -> None:
    flow = Dialog(core(max_ready=1).add_batch(["a"]))
    [call] = flow.round()  # one call: no room check, the script checks max_ready itself
    assert call.args[-2:] == ["", 1]  # the limit goes last, after the ("") id
    with pytest.raises(QueueFullError, match=r"^queue full: 1 jobs are waiting") as full:
        flow.answer([[Code.QUEUE_FULL, b"1 jobs are waiting (ready + delayed): 1 more would "
                                       b"pass max_ready=1"]])
    assert full.value.ids == [None]


def test_other_error_replies_are_raised_as_they_came() -> None:
    flow = Dialog(core().add_batch(["a", "b", "c"]))
    flow.answer([room()])
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        flow.answer([[Code.OK, b"1,2"], ResponseError("WRONGTYPE")])


def test_an_announcement_refused_for_memory_reads_the_registry_instead() -> None:
    queue = core(announce=True)
    flow = Dialog(queue.reserve(1))
    assert names(flow.round()) == ["SADD", "HGET", "TIME"]
    flow.fail(OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
    assert names(flow.round()) == ["SMEMBERS", "HGET", "TIME"]  # reads only (and the clock)
    flow.answer([{b"other"}, None, server_time()])  # not recorded: the next call tries again
    assert flow.script().script.name == "reserve" and not queue.announced
    flow.answer(reserved([]))
    flow = Dialog(queue.reserve(1))
    flow.round()
    flow.fail(OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
    flow.answer([{b"q"}, None, server_time()])
    assert queue.announced


def test_a_recorded_partition_count_that_differs_refuses_before_any_enqueue() -> None:
    flow = Dialog(core(2, announce=True).add_batch(["a"]))
    assert names(flow.round()) == ["SADD", "HSETNX", "HGET", "TIME"]
    with pytest.raises(ConfigurationError, match="partitions=4"):
        flow.answer([0, 0, b"4", server_time()])


def test_records_are_dated_by_the_server_clock_learned_with_the_announcement() -> None:
    """A producer an hour behind the server dates its records by the server's clock: its
    announcement's TIME gives the offset (the record's date is informational)."""
    queue = core(announce=True)
    flow = Dialog(flow_of(queue.add("a")))
    assert names(flow.round()) == ["SADD", "HGET", "TIME"]
    server_ms = round((time.time() + 3600) * 1000)
    flow.answer([1, None, server_time(server_ms)])
    enqueue = flow.script()
    _, _, stamped = MSGPACK.loads(cast(bytes, enqueue.args[4]))
    assert abs(stamped - server_ms) < 60_000  # within a minute, not an hour
    assert abs(queue.settings.offset.ms - 3_600_000) < 60_000


def test_a_test_clock_is_sent_only_to_the_scripts_that_read_the_clock() -> None:
    settings = QueueSettings(name="q", clock=ManualClock(NOW))
    queue = QueueCore(settings, cluster=False)
    queue.announced = True
    add = Dialog(queue.add("a")).script()
    assert add.args[0] == int(NOW * 1000) and add.script.reads_clock  # the variant's ARGV
    assert MSGPACK.loads(cast(bytes, add.args[5]))[2] == int(NOW * 1000)  # and the record's date
    [ack] = Dialog(queue.ack(job("1"))).round()
    assert ack.args == ["1", "ab" * 8] and not ack.script.reads_clock
    production = QueueCore(QueueSettings(name="q"), cluster=False)
    production.announced = True
    plain = Dialog(production.add("a")).script()
    assert plain.args[0] == 0 and plain.script.sha != add.script.sha


def test_a_bad_payload_raises_before_the_first_effect() -> None:
    with pytest.raises(SerializationError):
        Dialog(core(announce=True).add_batch(["ok", object()]))


def test_ids_come_back_in_the_callers_order_across_partitions() -> None:
    queue = core(2)
    x, y = "k0", next(f"k{i}" for i in range(1, 99)
                      if queue.partitions.route([None], [f"k{i}"]) != queue.partitions.route(
                          [None], ["k0"]))
    flow = Dialog(queue.add_batch(["a", "b", "c"], partition_keys=[x, y, x]))
    assert names(flow.round()) == ["room", "room"]
    flow.answer([room(), room()])
    calls = flow.round()
    assert [int(c.args[2]) for c in calls] == [2, 1] or [int(c.args[2]) for c in calls] == [1, 2]
    # Each call's jobs get ids named after the payloads they carry.
    replies = []
    for call in calls:
        payloads = [MSGPACK.loads(r)[0] for r in call.args[4:]]
        replies.append([0, ",".join(f"id-{p}" for p in payloads).encode()])
    flow.answer(replies)
    assert flow.result == ["id-a", "id-b", "id-c"]


def test_reserve_tries_the_next_partition_while_one_is_empty_and_keeps_the_soonest_event() -> None:
    queue = core(3)
    flow = Dialog(queue.reserve(5))
    first = flow.script()
    assert first.script.name == "reserve" and first.args[0] == 5
    flow.answer(reserved([], wait_ms=7_000))
    second = flow.script()
    assert second.keys[0] != first.keys[0]
    flow.answer(reserved([], wait_ms=5_000))
    third = flow.script()
    flow.answer(reserved([("2-1", record("x"), 1)]))
    [got] = flow.result
    assert (got.id, got.payload, got.attempt) == ("2-1", "x", 1)
    assert {first.keys[0], second.keys[0], third.keys[0]} == {
        p.keys.key("ready") for p in queue.partitions.parts}


def test_reserve_asks_again_while_a_partition_took_only_orphans_and_has_more_ready() -> None:
    flow = Dialog(core().reserve(1))
    first = flow.script()
    flow.answer(reserved([], wait_ms=0))  # sweep_limit orphans dropped, more ids ready
    again = flow.script()
    assert again.keys == first.keys and again.args[0] == 1  # count
    flow.answer(reserved([("31", record("x"), 1)]))
    assert [j.id for j in flow.result] == ["31"]


def test_an_undecodable_record_is_buried_with_its_reason_and_not_returned() -> None:
    flow = Dialog(core().reserve(2))
    flow.answer(reserved([("1", record("fine"), 1), ("2", b"\xc1", 1)], token="cd" * 8))
    bury = flow.script()
    assert bury.script.name == "fail"
    assert bury.args[:2] == ["2", "cd" * 8] and bury.args[-1] == 0  # not retryable
    assert "DeserializationError" in str(bury.args[4])
    flow.answer([0, b"dead", 1])
    assert [j.id for j in flow.result] == ["1"]


def test_ack_and_reserve_is_one_round_trip_with_one_ack_per_partition() -> None:
    queue = core(2)
    done = [job("0-1", 0), job("1-1", 1), job("0-2", 0)]
    flow = Dialog(queue.ack_and_reserve(done, 10))
    calls = flow.round()
    assert names(calls) == ["ack", "ack", "reserve"]
    assert calls[0].args == ["0-1", "ab" * 8, "0-2", "ab" * 8]
    flow.answer([[0, 2], [0, 0, b"1-1"], reserved([("0-3", record(3), 1)])])
    settled, reservation = flow.result
    assert (settled.count, settled.refused) == (2, ["1-1"])
    assert [j.id for j in reservation.jobs] == ["0-3"]


def test_ack_and_reserve_with_nothing_to_lease_only_acks() -> None:
    flow = Dialog(core().ack_and_reserve([job("1")], 0))
    assert names(flow.round()) == ["ack"]
    flow.answer([[0, 1]])
    settled, reservation = flow.result
    assert settled.count == 1 and reservation is None


def test_extend_moves_the_deadline_of_held_jobs_only() -> None:
    held, lost = job("1"), job("2")
    flow = Dialog(core().extend([held, lost], 60))
    [call] = flow.round()
    assert call.script.name == "extend" and call.args[0] == 60_000
    flow.answer([[0, 123_000, 1, 0, b"2"]])
    assert flow.result == 1
    assert held.lease_deadline == 123.0 and lost.lease_deadline == NOW + 30
    assert not held.cancelled and not lost.cancelled


def test_extend_marks_the_jobs_cancelled_meanwhile_and_keeps_their_deadline() -> None:
    held, cancelled, lost = job("1"), job("2"), job("3")
    flow = Dialog(core().extend([held, cancelled, lost], 60))
    flow.round()
    flow.answer([[0, 123_000, 1, 1, b"2", b"3"]])
    assert flow.result == 1
    assert [j.cancelled for j in (held, cancelled, lost)] == [False, True, False]
    assert cancelled.lease_deadline == NOW + 30 and held.lease_deadline == 123.0


def test_a_wake_list_per_partition_on_one_server_and_one_at_a_time_on_a_cluster() -> None:
    assert len(core(3).wake_keys()) == 3
    cluster = core(3, cluster=True)
    assert len({cluster.wake_keys()[0] for _ in range(3)}) == 3  # in turn


def test_lock_waits_while_held_then_takes_it() -> None:
    flow = Dialog(core().acquire_lock("user:7", ttl=5, wait=10))
    assert flow.script().script.name == "lock"
    flow.answer([3, 20])  # LOCKED, 20 ms more
    assert flow.effect.seconds == pytest.approx(0.02)
    flow.answer(None)
    token = flow.script().args[0]
    flow.answer([0])
    assert flow.result == token
