"""The decisions inside the core flows, without Redis: how a slot sizes its batches, rides out
errors (heartbeat, BLPOP, settling calls), stops a batch slot, counts lost leases and buried
records; how a reserve walks partitions; how replies and routes combine over partitions; how
the dead-letter flows page, merge, scan and force."""

from __future__ import annotations

import itertools
import threading
from typing import Any, cast

import pytest
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from pyqcore.codes import Throttle
from pyqcore.core.calls import Settled
from pyqcore.core.dead_letters import CHUNK
from pyqcore.core.effects import Block, Pause
from pyqcore.core.failures import Outage
from pyqcore.core.manager import ManagerCore
from pyqcore.core.partitions import Partitions, merge_settled
from pyqcore.core.queue import QueueCore
from pyqcore.core.slot import (
    BURST_GIVE_UP_AFTER,
    Budget,
    Crew,
    Held,
    Retrying,
    SlotPlan,
    WorkerReport,
    backoff,
    heartbeat_loop,
    sleep_timeout,
    slot_loop,
)
from pyqcore.core.worker import reports_of
from pyqcore.errors import (
    ConfigurationError,
    LeaseLostError,
    RedisAuthenticationError,
    RedisUnavailableError,
)
from pyqcore.job import Job
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock
from tests.core.dialog import Dialog, dead_letters, dead_rows, names, record, reserved

NOW = 1_800_000_000.0
NOW_MS = int(NOW * 1000)


def queue_core(partitions: int = 1) -> QueueCore:
    queue = QueueCore(QueueSettings(name="q", clock=ManualClock(NOW), visibility_timeout=30,
                                    partitions=partitions), cluster=False)
    queue.announced = True
    return queue


def crew_of(*, burst: bool = True, prefetch: int = 100, batches: bool = False,
            max_jobs: int | None = None) -> tuple[Crew, threading.Event]:
    """A crew, and its stop flag."""
    stop = threading.Event()
    return Crew("q", stop, threading.Event(), burst, prefetch, Budget(max_jobs),
                idle_wait=1.0, visibility_timeout=30.0, batches=batches), stop


def leased(*ids: str) -> list[object]:
    return reserved([(i, record(f"payload {i}"), 1) for i in ids])


def job(job_id: str) -> Job:
    return Job(job_id, "q", None, None, 1, NOW, "ab" * 8, NOW + 30, 0)


# -- batch sizing -----------------------------------------------------------------------------

def sizes_after(runs: list[tuple[int, float]], prefetch: int = 100) -> list[int]:
    """The batch sizes a slot claims after batches that ran ``(jobs, seconds)``."""
    plan = SlotPlan(crew_of(prefetch=prefetch)[0])
    sizes = []
    for ran, elapsed in runs:
        plan.batch_ran([], ran, elapsed)
        assert plan.claim() or plan.wanted == 0
        sizes.append(plan.wanted)
    return sizes


def test_slow_jobs_are_leased_one_at_a_time_and_never_none() -> None:
    assert sizes_after([(1, 0.001), (2, 0.002), (4, 2.0), (1, 5.0)]) == [2, 4, 1, 1]


def test_batches_aim_at_a_tenth_of_a_second_of_work() -> None:
    fast = [(size, 0.0001) for size in (1, 2, 4, 8, 16, 32)]
    assert sizes_after([*fast, (64, 0.2)]) == [2, 4, 8, 16, 32, 64, 32]  # 0.1 s: 32 jobs
    assert sizes_after([*fast, (64, 0.001)], prefetch=50)[-1] == 50


def test_the_budget_grants_no_more_than_max_jobs() -> None:
    budget = Budget(5)
    assert (budget.claim(3), budget.claim(3), budget.claim(3)) == (3, 2, 0)
    budget.give_back(2)
    assert budget.claim(10) == 2
    assert Budget(None).claim(7) == 7


# -- riding out errors ------------------------------------------------------------------------

def test_the_heartbeat_outlives_a_failed_extend() -> None:
    queue, (crew, _) = queue_core(), crew_of()
    seconds = [0.0]
    crew.held = Held(clock=lambda: seconds[0])
    crew.held.add([job("1")])
    flow = Dialog(heartbeat_loop(queue, crew))
    for _ in range(2):
        seconds[0] += 10.0
        flow.answer(False)
        assert names(flow.round()) == ["extend"]
        flow.fail(ResponseError("WRONGTYPE"))  # not transient: logged, and the loop goes on
        assert flow.effect == Pause(10.0, crew.alarm)
    cast(threading.Event, crew.finished).set()  # every slot has finished: then the alarm
    flow.answer(True)
    assert flow.result is None


def test_a_failing_blpop_pauses_before_the_slot_tries_again() -> None:
    queue, (crew, _) = queue_core(), crew_of(burst=False)
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([reserved([])])
    assert isinstance(flow.effect, Block)
    flow.fail(RedisConnectionError("reset"))
    pause: object = flow.effect
    assert pause == Pause(0.5, crew.stop)


def outage_crew(*, burst: bool = False, give_up_after: float | None = None
                ) -> tuple[Crew, threading.Event, list[float]]:
    """A crew whose outage clock the test moves (``seconds[0]``), and its stop flag."""
    crew, stop = crew_of(burst=burst)
    seconds = [0.0]
    crew.outage = Outage(clock=lambda: seconds[0])
    crew.give_up_after = give_up_after
    return crew, stop, seconds


def test_a_settling_call_is_retried_for_a_visibility_timeout_and_at_least_three_times() -> None:
    error = RedisConnectionError("down")
    crew, _, seconds = outage_crew()
    patient = Retrying(crew)
    assert all(patient.delay(error) is not None for _ in range(20))  # 0 s into the outage
    seconds[0] = 30.0  # Redis has failed for a visibility timeout: the lease is likely gone
    hasty = Retrying(crew)  # ... so the next settling call gives up, but not before 3 tries
    assert [hasty.delay(error) is None for _ in range(3)] == [False, False, True]
    crew.outage.ended()  # Redis answered meanwhile: a new outage starts from 0
    assert all(Retrying(crew).delay(error) is not None for _ in range(3))


def test_a_worker_gives_up_after_give_up_after_with_a_typed_error() -> None:
    queue = queue_core()
    crew, _, seconds = outage_crew(burst=True, give_up_after=5.0)
    flow = Dialog(slot_loop(queue, crew))
    refused = RedisConnectionError("Connection refused")
    for at in (0.0, 2.0, 4.9):
        seconds[0] = at
        flow.fail(refused)
        assert isinstance(flow.effect, Pause) and flow.effect.until is crew.stop
        flow.answer(False)
    seconds[0] = 5.0
    flow.fail(refused)
    assert flow.result is None and crew.stopping()
    assert isinstance(crew.failure, RedisUnavailableError) and crew.failure.__cause__ is refused
    with pytest.raises(RedisUnavailableError, match="Connection refused"):
        crew.raise_failure()
    assert Dialog(slot_loop(queue, crew)).result is None  # no other slot leases more
    assert Retrying(crew).delay(refused) is None  # and any settling call gives up at once


def test_an_outage_is_timed_from_its_own_first_failure() -> None:
    queue = queue_core()
    crew, _, seconds = outage_crew(burst=True, give_up_after=5.0)
    flow = Dialog(slot_loop(queue, crew))
    flow.fail(RedisConnectionError("down"))  # an outage at 0 s ...
    flow.answer(False)
    seconds[0] = 4.0
    flow.answer([leased("1")])  # ... over at 4 s
    flow.answer(None)
    seconds[0] = 10.0
    flow.fail(RedisConnectionError("down again"))  # a new one, 0 s old: not past 5 s
    assert isinstance(flow.effect, Pause) and crew.failure is None


def test_a_refused_password_is_the_error_a_worker_gives_up_with() -> None:
    crew, _, seconds = outage_crew(burst=True, give_up_after=1.0)
    seconds[0] = 0.0
    assert not crew.gives_up(AuthenticationError("WRONGPASS"), crew.outage.failed())
    seconds[0] = 1.0
    assert crew.gives_up(AuthenticationError("WRONGPASS"), crew.outage.failed())
    assert isinstance(crew.failure, RedisAuthenticationError)


def test_a_long_running_worker_never_gives_up_by_default() -> None:
    queue = queue_core()
    crew, _, seconds = outage_crew(burst=False)
    flow = Dialog(slot_loop(queue, crew))
    for at in (0.0, 600.0, 86_400.0):
        seconds[0] = at
        flow.fail(RedisConnectionError("down"))
        assert flow.effect == Pause(2.0, crew.stop) or flow.effect.seconds < 2.0
        flow.answer(False)
    assert crew.failure is None


def test_a_stop_during_an_outage_ends_the_slot_after_a_visibility_timeout_without_spinning(
) -> None:
    queue = queue_core()
    crew, stop, seconds = outage_crew(burst=False)
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    stop.set()  # while job 1 runs
    flow.answer(None)  # job 1 ran: its ack goes with the next round trip, and no lease
    assert names(flow.round()) == ["ack"]
    flow.fail(RedisConnectionError("down"))
    pause = flow.effect  # stopping: a real pause (a stop flag already set would not wait)
    assert isinstance(pause, Pause) and pause.until is None and pause.seconds > 0
    flow.answer(False)
    assert names(flow.round()) == ["ack"]  # the ack is tried again ...
    seconds[0] = 30.0
    flow.fail(RedisConnectionError("down"))
    assert flow.result is None  # ... until Redis has failed for a visibility timeout
    assert len(crew.held) == 0 and crew.failure is None


def test_burst_workers_give_up_after_30_s_by_default_and_others_never() -> None:
    queue = queue_core()

    def crew(**options: Any) -> Crew:
        return Crew.of(queue, batches=False, stop=threading.Event(), finished=threading.Event(),
                       alarm=threading.Event(), longest_block=1.0, concurrency=1, **options)

    assert crew(burst=True).give_up_after == BURST_GIVE_UP_AFTER == 30.0
    assert crew().give_up_after is None
    assert crew(burst=True, give_up_after=None).give_up_after is None
    assert crew(give_up_after=2.5).give_up_after == 2.5
    for bad in (0, -1.0, float("inf"), float("nan"), "5"):
        with pytest.raises(ConfigurationError, match="give_up_after"):
            crew(burst=True, give_up_after=bad)


def test_workers_run_side_by_side_raise_the_first_error_once_all_returned() -> None:
    report = WorkerReport(acked=1)
    assert reports_of({"a": report}) == {"a": report}
    error = RedisUnavailableError("down")
    with pytest.raises(RedisUnavailableError):
        reports_of({"a": report, "b": error})


def test_waits_are_bounded_both_ways() -> None:
    assert [backoff(n, cap=1.0) for n in (1, 2, 3, 4, 40)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert sleep_timeout(30.0, 0) == 0.01  # never 0: BLPOP 0 is for ever
    assert sleep_timeout(30.0, None) == 30.0
    assert sleep_timeout(30.0, 2500) == 2.5


# -- stopping, failing, burying ---------------------------------------------------------------

def test_a_stopping_batch_slot_releases_its_batch_unrun() -> None:
    queue, (crew, stop) = queue_core(), crew_of(batches=True)
    flow = Dialog(slot_loop(queue, crew))
    assert names(flow.round()) == ["reserve"]
    stop.set()  # while the lease is on its way
    flow.answer([leased("1", "2")])
    [release] = flow.round()
    assert release.script.name == "release" and release.args[::2] == ["1", "2"]
    flow.answer([[0, 2]])
    assert flow.result is None
    assert crew.tally.snapshot() == WorkerReport(delivered=2, released=2)


def test_a_failure_refused_for_a_lost_lease_is_counted() -> None:
    queue, (crew, _) = queue_core(), crew_of()
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([leased("1")])
    flow.answer(RuntimeError("handler failed"))
    assert flow.script().script.name == "fail"
    flow.fail(LeaseLostError("job 1 is not leased under token abab"))
    assert names(flow.round()) == ["reserve"]  # nothing to ack
    flow.answer([reserved([])])
    assert crew.tally.snapshot() == WorkerReport(delivered=1, lease_lost=1)


def test_a_slot_that_only_buried_a_corrupt_record_reserves_again_at_once() -> None:
    queue, (crew, _) = queue_core(), crew_of()  # burst: stops only when nothing is ready
    flow = Dialog(slot_loop(queue, crew))
    flow.answer([reserved([("1", b"\xc1 corrupt", 1)])])
    assert flow.script().script.name == "fail"  # buried
    flow.answer([0, b"dead", NOW_MS])
    assert names(flow.round()) == ["reserve"]
    flow.answer([leased("2")])
    assert isinstance(flow.effect, Job) and flow.effect.id == "2"


# -- partitions -------------------------------------------------------------------------------

def test_a_partition_with_only_corrupt_records_is_buried_before_the_walk_goes_on() -> None:
    queue = queue_core(2)
    flow = Dialog(queue.reserve(5))
    first = flow.script()
    flow.answer(reserved([("0-1", b"\xc1", 1)], token="cd" * 8))
    bury = flow.script()
    assert bury.script.name == "fail" and bury.args[1:3] == ["0-1", "cd" * 8]
    assert bury.keys[0].split(":")[1] == first.keys[0].split(":")[1]  # in its own partition
    flow.answer([0, b"dead", NOW_MS])
    assert flow.result == []


@pytest.mark.parametrize(("waits", "soonest"), [
    ((5000, 9000, -1), 5000),
    ((7000, 0, 5000, -1), 5000),  # 0: more is ready now there, so that partition is asked again
    ((-1, -1, -1), None),
])
def test_an_idle_reservation_names_the_soonest_event_of_every_partition(
        waits: tuple[int, ...], soonest: int | None) -> None:
    queue = queue_core(3)
    flow = Dialog(queue.ack_and_reserve([], 5))
    flow.answer([reserved([], wait_ms=waits[0])])
    asked = []
    for wait in waits[1:]:
        asked.append(flow.script().keys[0])
        flow.answer(reserved([], wait_ms=wait))
    settled, reservation = flow.result
    assert settled is None and reservation.wait_ms == soonest
    again = [a == b for a, b in itertools.pairwise(asked)]
    assert again == [wait == 0 for wait in waits[1:-1]]


@pytest.mark.parametrize("throttle", [Throttle.FULL, Throttle.GROUPS, Throttle.PAUSED])
def test_a_partition_due_now_is_not_outbid_by_a_later_partitions_wait(throttle: Throttle) -> None:
    # A wait of 0 under a limit (e.g. more leases expired than one call reclaims, at
    # max_active): something there may be leased at once, whatever the others wait for.
    queue = queue_core(3)
    flow = Dialog(queue.ack_and_reserve([], 5))
    flow.answer([reserved([], wait_ms=0, throttle=throttle)])
    flow.answer(reserved([], wait_ms=5000))
    flow.answer(reserved([], wait_ms=-1))
    _settled, reservation = flow.result
    assert reservation.wait_ms == 0  # the slot blocks for 10 ms, not 5 s


def test_settling_over_partitions_adds_up_every_partition() -> None:
    merged = merge_settled([Settled(1, []), Settled(2, ["x"]), Settled(0, ["y"])])
    assert (merged.count, merged.refused) == (3, ["x", "y"])


def test_jobs_without_a_key_are_spread_round_robin_even_one_at_a_time() -> None:
    parts = Partitions(QueueSettings(name="q", partitions=4))
    assert [parts.route([None], [None])[0] for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert parts.route([None] * 3, [None] * 3) == [0, 1, 2]


def test_each_reserve_starts_one_partition_further_along() -> None:
    parts = Partitions(QueueSettings(name="q", partitions=3))
    starts = [parts.reading_order()[0].partition for _ in range(4)]
    assert starts == [0, 1, 2, 0]


# -- the dead-letter flows ----------------------------------------------------------------------





def test_partitions_are_merged_by_time_whichever_partition_comes_first() -> None:
    flow = Dialog(dead_letters(2).items("q", limit=4))
    flow.answer(dead_rows(("0-a", 30), ("0-b", 40)))
    flow.answer(dead_rows(("1-a", 10), ("1-b", 20)))
    assert [i.job_id for i in flow.result] == ["1-a", "1-b", "0-a", "0-b"]


def test_a_partition_is_read_past_its_first_page_when_merging() -> None:
    flow = Dialog(dead_letters(2).items("q", limit=CHUNK + 20, offset=5))
    assert flow.script().args[:2] == [0, CHUNK]
    flow.answer(dead_rows(*((f"0-{i}", i) for i in range(CHUNK))))
    flow.answer(dead_rows(("1-a", 5_000)))
    second = flow.script()
    assert second.args[:2] == [CHUNK, CHUNK]  # partition 0 again, from where it stopped
    flow.answer(dead_rows(*((f"0-{i}", i) for i in range(CHUNK, CHUNK + 30))))
    items = flow.result
    assert len(items) == CHUNK + 20
    assert [i.job_id for i in items[:2]] == ["0-5", "0-6"]  # the offset, over the merge


def test_a_listing_over_several_queues_stops_at_its_limit() -> None:
    flow = Dialog(dead_letters(queues=("a", "b")).items(limit=3))
    flow.answer([b"a", b"b"])  # SMEMBERS of the registry
    assert flow.script().args[:2] == [0, 3]
    flow.answer(dead_rows(("a-1", 1), ("a-2", 2)))
    assert flow.script().args[:2] == [0, 1]  # only what the limit leaves
    flow.answer(dead_rows(("b-1", 3)))
    assert [i.job_id for i in flow.result] == ["a-1", "a-2", "b-1"]


def test_a_redrive_scan_goes_on_past_a_full_batch_of_kept_back_jobs() -> None:
    flow = Dialog(dead_letters().requeue("q", force=False))
    first = flow.script()
    assert first.script.name == "redrive" and first.args[:4] == [2, -1, 0, CHUNK]
    flow.answer([0, 0, CHUNK, 0, CHUNK])  # a whole batch kept back at the limit
    second = flow.script()
    assert second.args[:4] == [2, -1, CHUNK, CHUNK]  # past the kept-back ones
    flow.answer([0, 4, 0, 0, 4])
    assert flow.result == 4


def test_an_operators_requeue_is_forced_unless_told_otherwise() -> None:
    flow = Dialog(dead_letters().requeue("q", ["1", "2"]))
    call = flow.script()
    assert call.args[0] == -1 and call.args[4:] == ["1", "2"]
    flow.answer([0, 2, 0, 0, 2])
    assert flow.result == 2


def test_monitoring_processes_the_dead_letter_queue_first_unless_told_not_to() -> None:
    dlq = dead_letters()
    flow = Dialog(ManagerCore(dlq.registry, dlq).monitor_queue_sizes())
    flow.answer([b"q"])
    assert flow.script().script.name == "purge"
    flow = Dialog(ManagerCore(dlq.registry, dlq).monitor_queue_sizes(process_dead_letters=False))
    flow.answer([b"q"])
    assert names(flow.round()) == ["counts"]
