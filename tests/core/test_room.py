"""The room check of a batch of several enqueue calls, without Redis (pyqcore.core.room): what
it counts against max_ready (per partition) and against maxmemory (per server, the calls of
the partitions it holds together, in the order they are sent)."""

from __future__ import annotations

from typing import Any

from pyqcore.core.calls import Call, QueueCalls, Room
from pyqcore.core.room import (
    PER_JOB_BYTES,
    RECORD_FACTOR,
    RUNNING_FACTOR,
    RUNNING_PER_JOB,
    Need,
    refusal,
)
from pyqcore.settings import QueueSettings

MB = 2**20


def enqueue(*records: bytes) -> Call[Any]:
    return QueueCalls(QueueSettings(name="q")).enqueue([""] * len(records), records)


def room(waiting: int = 0, used: int = 10 * MB, maxmemory: int = 0, server: str = "a") -> Room:
    return Room(waiting, used, maxmemory, server)


def test_a_call_needs_its_arguments_as_it_starts_and_its_records_once_stored() -> None:
    need = Need()
    need.add(enqueue(b"x" * 1000, b"y" * 1000), 2)
    size = 2000  # the records (the numbers beside them are negligible, and not counted)
    assert need.peak == round(RUNNING_FACTOR * size) + 2 * RUNNING_PER_JOB
    assert need.stored == round(RECORD_FACTOR * size) + 2 * PER_JOB_BYTES
    stored = need.stored
    need.add(enqueue(b"z" * 2000), 1)  # a later call starts on top of what the first stored
    assert need.peak == stored + round(RUNNING_FACTOR * 2000) + RUNNING_PER_JOB
    assert need.jobs == 3 and need.most == need.peak


def test_max_ready_counts_each_partition_on_its_own() -> None:
    calls = [enqueue(b"a", b"b"), enqueue(b"c")]
    rooms = {0: room(waiting=8), 1: room(waiting=8)}
    assert refusal("q", rooms, calls, [[0, 1], [2]], [0, 1], max_ready=10) is None
    reason = refusal("q", rooms, calls, [[0, 1], [2]], [0, 0], max_ready=10, partitioned=True)
    assert reason == ("partition 0 of queue 'q' has 8 jobs waiting (ready + delayed), and 3 more "
                      "would pass max_ready=10")


def test_partitions_on_one_server_share_its_memory() -> None:
    big = enqueue(b"x" * MB)
    fits = 10 * MB + round(RUNNING_FACTOR * MB) + RUNNING_PER_JOB  # used, one call starting
    apart = {0: room(maxmemory=fits, server="a"), 1: room(maxmemory=fits, server="b")}
    assert refusal("q", apart, [big, big], [[0], [1]], [0, 1], max_ready=None) is None
    shared = {0: room(maxmemory=fits, server="a"), 1: room(maxmemory=fits, server="a")}
    reason = refusal("q", shared, [big, big], [[0], [1]], [0, 1], max_ready=None)
    assert reason is not None and reason.startswith("2 jobs of queue 'q' need about")


def test_no_limit_or_no_right_to_read_the_memory_checks_nothing() -> None:
    huge = enqueue(b"x" * MB)
    for maxmemory in (0, -1):  # no maxmemory; INFO denied to this ACL user
        rooms = {0: room(used=-1 if maxmemory < 0 else 10 * MB, maxmemory=maxmemory)}
        assert refusal("q", rooms, [huge, huge], [[0], [1]], [0, 0], max_ready=None) is None
