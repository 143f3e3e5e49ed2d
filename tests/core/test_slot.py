"""The worker's slot and heartbeat loops without Redis (pyqcore.core.slot): what a slot sends
and runs after each reply, stopping, releasing, retrying, sizing batches, sleeping."""

from __future__ import annotations

import threading
from typing import cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from pyqcore.core.effects import Batch, Block, Pause
from pyqcore.core.queue import QueueCore
from pyqcore.core.slot import Budget, Crew, Held, WorkerReport, heartbeat_loop, slot_loop
from pyqcore.errors import NonRetryableError
from pyqcore.job import Job
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock
from tests.core.dialog import Dialog, names, record, reserved

NOW = 1_800_000_000.0


def setup(*, burst: bool = True, prefetch: int = 100, max_jobs: int | None = None,
          batches: bool = False) -> tuple[QueueCore, Crew, threading.Event]:
    """A queue, a crew, and the crew's stop flag."""
    queue = QueueCore(QueueSettings(name="q", clock=ManualClock(NOW), visibility_timeout=30),
                      cluster=False)
    queue.announced = True
    stop = threading.Event()
    crew = Crew("q", stop, threading.Event(), burst, prefetch, Budget(max_jobs),
                idle_wait=1.0, visibility_timeout=30.0, batches=batches)
    return queue, crew, stop


def leased(*ids: str) -> list[object]:
    return reserved([(i, record(f"payload {i}"), 1) for i in ids])


def test_a_slot_runs_each_job_then_acks_them_with_its_next_lease() -> None:
    queue, crew, _stop = setup()
    flow = Dialog(slot_loop(queue, crew))
    assert names(flow.round()) == ["reserve"]
    assert flow.round()[0].args[1] == 1  # the first batch is one job
    flow.answer([leased("1")])
    assert isinstance(flow.effect, Job) and flow.effect.id == "1"
    flow.answer(None)  # the handler returned
    ack, lease = flow.round()
    assert (ack.script.name, ack.args[0], lease.script.name) == ("ack", "1", "reserve")
    assert lease.args[1] == 2  # a fast batch: the next one doubles
    flow.answer([[0, 1], leased()])  # nothing ready in burst mode: the slot stops
    assert flow.result is None
    assert crew.tally.snapshot() == WorkerReport(delivered=1, acked=1)


def test_a_failing_job_is_failed_by_the_script_and_not_acked() -> None:
    queue, crew, _stop = setup()
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    flow.answer(ValueError("boom"))  # what the handler raised
    fail = flow.script()
    assert fail.script.name == "fail" and fail.args[1] == "1" and fail.args[-1] == 1
    flow.answer([0, b"retry", 5_000])
    assert names(flow.round()) == ["reserve"]  # nothing to ack
    flow.answer([leased()])
    assert crew.tally.snapshot() == WorkerReport(delivered=1, retried=1)


def test_non_retryable_errors_are_failed_for_good() -> None:
    queue, crew, _stop = setup()
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    flow.answer(NonRetryableError("poison"))
    assert flow.script().args[-1] == 0  # retryable = 0: straight to the DLQ
    flow.answer([0, b"dead", 5_000])
    flow.answer([leased()])
    assert crew.tally.snapshot() == WorkerReport(delivered=1, dead=1)


def test_a_stop_request_mid_batch_releases_exactly_the_unstarted_jobs() -> None:
    queue, crew, stop = setup()
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    flow.answer(None)
    flow.answer([[0, 1], leased("2", "3", "4")])
    assert flow.effect.id == "2"
    stop.set()  # while job 2 runs
    flow.answer(None)
    [release] = flow.round()
    assert release.script.name == "release" and release.args[::2] == ["3", "4"]
    flow.answer([[0, 2]])
    ack = flow.round()
    assert names(ack) == ["ack"] and ack[0].args[::2] == ["2"]  # no lease once stopping
    flow.answer([[0, 1]])
    assert flow.result is None
    assert crew.tally.snapshot() == WorkerReport(delivered=4, acked=2, released=2)


def test_batches_grow_to_the_prefetch_and_the_budget_caps_deliveries() -> None:
    queue, crew, _stop = setup(prefetch=3, max_jobs=5)
    flow = Dialog(slot_loop(queue, crew))
    sizes = []
    ids = iter(str(i) for i in range(100))
    while not isinstance(flow.effect, list) or flow.round()[-1].script.name == "reserve":
        if isinstance(flow.effect, Job):
            flow.answer(None)
            continue
        calls = flow.round()
        sizes.append(calls[-1].args[1])
        replies: list[object] = [[0, len(c.args) // 2] for c in calls[:-1]]
        flow.answer([*replies, leased(*(next(ids) for _ in range(int(calls[-1].args[1]))))])
    assert sizes == [1, 2, 2]  # doubling, capped at prefetch 3 and then by max_jobs 5
    assert names(flow.round()) == ["ack"]
    flow.answer([[0, 2]])
    assert crew.tally.snapshot().acked == 5


def test_an_idle_slot_blocks_on_the_wake_list_until_the_next_event() -> None:
    queue, crew, stop = setup(burst=False)
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([reserved([], wait_ms=300)])
    block = flow.effect
    assert isinstance(block, Block) and block.keys == queue.wake_keys()
    assert block.timeout == pytest.approx(0.3)  # not the idle_wait of 1 s: the due time
    stop.set()
    flow.answer(None)
    assert flow.result is None  # stopped, holding nothing: nothing to ack or lease


def test_a_failed_round_trip_pauses_and_keeps_the_acks() -> None:
    queue, crew, _stop = setup()
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    flow.answer(None)
    flow.fail(RedisConnectionError("down"))
    pause = flow.effect
    assert isinstance(pause, Pause) and pause.until is crew.stop and pause.seconds > 0
    flow.answer(False)
    assert names(flow.round()) == ["ack", "reserve"]  # the ack is sent again


def test_a_batch_handler_gets_the_batch_and_its_failures_are_failed_alone() -> None:
    queue, crew, _stop = setup(batches=True)
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    assert isinstance(flow.effect, Batch)
    flow.answer(None)
    flow.answer([[0, 1], leased("2", "3")])
    assert [j.id for j in flow.effect.jobs] == ["2", "3"]
    flow.answer({"3": ValueError("bad row")})
    assert flow.script().args[1] == "3"
    flow.answer([0, b"retry", 1])
    ack, _ = flow.round()
    assert ack.args[::2] == ["2"]


def test_a_raising_batch_handler_fails_every_job_of_the_batch() -> None:
    queue, crew, _stop = setup(batches=True)
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1", "2")])
    flow.answer(RuntimeError("db down"))
    failed = []
    while flow.steps.running and not isinstance(flow.effect, list):
        failed.append(flow.script().args[1])
        flow.answer([0, b"retry", 1])
    assert failed == ["1", "2"]


def test_the_heartbeat_extends_only_leases_held_a_third_of_the_timeout() -> None:
    queue, crew, _stop = setup()
    seconds = [0.0]
    crew.held = Held(clock=lambda: seconds[0])
    old = Job("1", "q", None, None, 1, NOW, "ab" * 8, NOW + 30, 0)
    crew.held.add([old])
    flow = Dialog(heartbeat_loop(queue, crew))
    assert flow.effect == Pause(10.0, crew.alarm)
    seconds[0] = 10.0
    young = Job("2", "q", None, None, 1, NOW, "ab" * 8, NOW + 30, 0)
    crew.held.add([young])
    flow.answer(False)  # 10 s passed: only the old lease is a third of the timeout old
    [extend] = flow.round()
    assert extend.script.name == "extend" and extend.args[2::2] == ["1"]
    flow.answer([[0, int((NOW + 40) * 1000), 1, 0]])
    assert old.lease_deadline == NOW + 40
    assert isinstance(flow.effect, Pause)
    cast(threading.Event, crew.finished).set()  # every slot has finished: then the alarm
    flow.answer(True)
    assert flow.result is None
