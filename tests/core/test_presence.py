"""The worker registry's flows without Redis (pyqcore.core.presence): what a beat writes, how
a worker leaves, and which workers a listing shows."""

from __future__ import annotations

import json
import threading

from pyqcore.core.effects import Pause
from pyqcore.core.presence import (
    BEAT_SECONDS,
    MISSED_BEATS,
    Presence,
    list_workers,
    presence_loop,
)
from pyqcore.core.queue import QueueCore
from pyqcore.core.slot import Budget, Crew, Held
from pyqcore.job import Job
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock
from tests.core.dialog import Dialog, names

NOW = 1_800_000_000.0
TTL_MS = int(BEAT_SECONDS * MISSED_BEATS * 1000)


def presence(held: list[Job] | None = None) -> Presence:
    core = QueueCore(QueueSettings(name="emails", clock=ManualClock(NOW)), cluster=False)
    crew = Crew("emails", threading.Event(), threading.Event(), False, 10, Budget(None),
                1.0, 30.0, False, held=Held(clock=lambda: 100.0))
    crew.held.add(held or [])
    crew.tally.add(acked=7, retried=2, dead=1)
    return Presence(core, crew, driver="sync", slots=4)


def test_a_beat_writes_the_worker_expiring_and_trims_the_index() -> None:
    me = presence([Job("42", "emails", None, None, 1, NOW, "ab" * 8, NOW + 30, 0)])
    flow = Dialog(me.beat())
    hset, pexpire, zadd, trim = flow.round()
    assert names(flow.round()) == ["HSET", "PEXPIRE", "ZADD", "ZREMRANGEBYSCORE"]
    fields = dict(zip(hset.args[2::2], hset.args[3::2], strict=True))
    assert hset.args[1] == f"pyqcore:worker:{me.id}"
    assert (fields["queues"], fields["slots"], fields["driver"]) == ("emails", 4, "sync")
    assert (fields["done"], fields["failed"], fields["held"]) == (7, 3, 1)
    assert json.loads(fields["oldest"]) == [["42", 0.0]]
    assert pexpire.args[2] == TTL_MS
    assert zadd.args == ("ZADD", "pyqcore:workers", int(NOW * 1000), me.id)
    assert trim.args[2:] == ("-inf", f"({int(NOW * 1000) - TTL_MS}")
    flow.answer([4, 1, 1, 0])
    assert flow.result is None


def test_a_beat_shows_the_ten_longest_held_jobs_of_more() -> None:
    jobs = [Job(str(i), "emails", None, None, 1, NOW, "ab" * 8, NOW + 30, 0) for i in range(12)]
    me = presence(jobs)
    hset, *_ = Dialog(me.beat()).round()
    fields = dict(zip(hset.args[2::2], hset.args[3::2], strict=True))
    assert fields["held"] == 12
    assert [job_id for job_id, _ in json.loads(fields["oldest"])] == [str(i) for i in range(10)]


def test_a_worker_started_at_its_first_beat_and_beat_at_its_last() -> None:
    me = presence()
    clock = me.core.settings.clock
    assert isinstance(clock, ManualClock)

    def beat() -> dict[str, object]:
        hset, *_ = Dialog(me.beat()).round()
        return dict(zip(hset.args[2::2], hset.args[3::2], strict=True))

    first = beat()
    clock.advance(BEAT_SECONDS)
    second = beat()
    assert first["started_ms"] == second["started_ms"] == int(NOW * 1000)
    assert second["beat_ms"] == int((NOW + BEAT_SECONDS) * 1000)


def test_the_loop_beats_until_the_worker_finishes_then_leaves() -> None:
    me = presence()
    flow = Dialog(presence_loop(me))
    flow.answer([1, 1, 1, 0])
    assert flow.effect == Pause(BEAT_SECONDS, me.crew.finished)
    flow.answer(False)  # not finished: beat again
    assert names(flow.round()) == ["HSET", "PEXPIRE", "ZADD", "ZREMRANGEBYSCORE"]
    flow.fail(ConnectionError("down"))  # a lost beat is skipped
    flow.answer(True)  # finished
    assert names(flow.round()) == ["DEL", "ZREM"]
    flow.answer([1, 1])
    assert flow.result is None


def test_a_listing_shows_the_workers_that_beat_recently_oldest_first() -> None:
    flow = Dialog(list_workers("pyqcore", ManualClock(NOW)))
    assert flow.effect.args == ("ZRANGEBYSCORE", "pyqcore:workers", int(NOW * 1000) - TTL_MS,
                                "+inf")
    flow.answer([b"b", b"a", b"gone"])
    assert names(flow.round()) == ["HGETALL"] * 3

    def entry(worker_id: str, started: int) -> dict[bytes, bytes]:
        return {k.encode(): str(v).encode() for k, v in {
            "id": worker_id, "host": "h", "pid": 9, "driver": "asyncio", "queues": "a,b",
            "slots": 2, "started_ms": started, "beat_ms": 5, "done": 1, "failed": 0,
            "held": 1, "oldest": '[["7", 1.5]]'}.items()}

    flow.answer([entry("b", 2000), entry("a", 1000), {}])  # "gone" expired meanwhile
    workers = flow.result
    assert [w.id for w in workers] == ["a", "b"]
    a = workers[0]
    assert (a.queues, a.oldest, a.started_at, a.last_beat) == (["a", "b"], [("7", 1.5)], 1.0,
                                                                0.005)
    assert (a.host, a.pid, a.driver, a.slots, a.done, a.failed, a.held) == (
        "h", 9, "asyncio", 2, 1, 0, 1)
