"""Schedules (``manager.schedule`` / ``schedules`` / ``unschedule``, and the scheduler's pass
``claim_due_schedules``): stored with their queue, due times by croniter in their time zone on
the server's clock (here the fake clock that stands in for it), each due run enqueued once
whichever scheduler claims it, and the catch-up policy after downtime. On both drivers, one
server and a cluster."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from pyqcore import ConfigurationError, QueueManager
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS

MINUTE = 60


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def run_id(name: str, seconds: float) -> str:
    return f"{name}@{utc(seconds).strftime('%Y-%m-%dT%H:%M:%S')}.000Z"


def ready_ids(manager: QueueManager, queue: str) -> list[str]:
    jobs = manager.get_queue(queue).reserve(count=1000)
    manager.get_queue(queue).ack(jobs)
    return [job.id for job in jobs]


def test_a_schedule_adds_its_job_at_each_due_time_once(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    start = clock.now  # a whole minute (2027-01-15 08:00:00 UTC)
    manager = api.QueueManager(client, clock=clock)
    manager.register("reports")
    stored = manager.schedule("hourly", "reports", {"kind": "sales"}, every=MINUTE,
                              context={"by": "scheduler"})
    assert stored.next_due == utc(start + MINUTE)
    assert [(s.name, s.queue, s.every, s.next_due) for s in manager.schedules()] == [
        ("hourly", "reports", MINUTE, utc(start + MINUTE))]
    assert manager.claim_due_schedules().enqueued == 0  # not due yet
    clock.advance(MINUTE)
    assert manager.claim_due_schedules().enqueued == 1
    assert manager.claim_due_schedules().enqueued == 0  # that due time is done
    [job] = manager.get_queue("reports").reserve()
    assert (job.id, job.payload, job.context) == (
        run_id("hourly", start + MINUTE), {"kind": "sales"}, {"by": "scheduler"})
    assert job.enqueued_at == start + MINUTE  # dated by its due time
    manager.get_queue("reports").ack(job)
    assert manager.schedules()[0].next_due == utc(start + 2 * MINUTE)


def test_schedulers_claiming_the_same_due_time_enqueue_it_once(api: Api, client: Client,
                                                               clock: FakeClock) -> None:
    schedulers = [api.QueueManager(client, clock=clock) for _ in range(3)]
    schedulers[0].register("ticks")
    schedulers[0].schedule("tick", "ticks", "t", every=MINUTE)
    for _ in range(5):
        clock.advance(MINUTE)
        assert sum(s.claim_due_schedules().enqueued for s in schedulers) == 1
    assert len(ready_ids(schedulers[0], "ticks")) == 5


@pytest.mark.parametrize(("catch_up", "missed"), [(0, []), (1, [8]), (5, [4, 5, 6, 7, 8])])
def test_after_downtime_only_the_latest_missed_runs_are_added(
    api: Api, client: Client, clock: FakeClock, catch_up: int, missed: list[int],
) -> None:
    """Ten minutes with no scheduler: the runs less than a minute late (9 and 10) are added,
    and of the older ones only the ``catch_up`` latest."""
    start = clock.now
    manager = api.QueueManager(client, clock=clock)
    manager.register("ticks")
    manager.schedule("tick", "ticks", None, every=MINUTE, catch_up=catch_up)
    clock.advance(10 * MINUTE)
    added = manager.claim_due_schedules().enqueued
    expected = [run_id("tick", start + m * MINUTE) for m in [*missed, 9, 10]]
    assert added == len(expected)
    assert ready_ids(manager, "ticks") == expected
    assert manager.schedules()[0].next_due == utc(start + 11 * MINUTE)


def test_a_cron_schedule_runs_in_its_time_zone(api: Api, client: Client,
                                               clock: FakeClock) -> None:
    manager = api.QueueManager(client, clock=clock)  # now: 08:00 UTC, 09:00 in Paris
    paris = manager.schedule("morning", "mail", "digest", cron="0 9 * * *", tz="Europe/Paris")
    assert paris.next_due == datetime(2027, 1, 16, 8, 0, tzinfo=timezone.utc)  # tomorrow
    utc_ = manager.schedule("utc-morning", "mail", "digest", cron="0 9 * * *")
    assert utc_.next_due == datetime(2027, 1, 15, 9, 0, tzinfo=timezone.utc)  # today
    clock.advance(3600)
    assert manager.claim_due_schedules().enqueued == 1  # only the UTC one


def test_declaring_a_schedule_again_keeps_its_due_time_and_a_change_restarts_it(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    start = clock.now
    manager = api.QueueManager(client, clock=clock)
    manager.schedule("s", "q", 1, every=10 * MINUTE)
    clock.advance(4 * MINUTE)
    assert manager.schedule("s", "q", 1, every=10 * MINUTE).next_due == utc(start + 600)
    clock.advance(6 * MINUTE + 1)  # due, not claimed yet (say, the application restarted)
    assert manager.schedule("s", "q", 1, every=10 * MINUTE).next_due == utc(start + 600)
    assert manager.claim_due_schedules().enqueued == 1  # that run is not skipped
    assert manager.schedule("s", "q", 2, every=MINUTE).next_due == utc(start + 11 * MINUTE)
    moved = manager.schedule("s", "other", 2, every=MINUTE)  # one name, one schedule
    assert [(s.name, s.queue) for s in manager.schedules()] == [("s", "other")]
    assert moved.payload == 2


def test_unschedule_removes_it_and_says_whether_it_was_there(api: Api, client: Client,
                                                             clock: FakeClock) -> None:
    manager = api.QueueManager(client, clock=clock)
    manager.schedule("s", "q", None, every=MINUTE)
    assert manager.unschedule("s") is True
    assert manager.unschedule("s") is False
    assert manager.schedules() == []
    clock.advance(MINUTE)
    assert manager.claim_due_schedules().enqueued == 0
    assert all_keys(client) == set()


def test_a_partitioned_queues_schedule_runs_in_its_first_partition(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    manager = api.QueueManager(client, clock=clock)
    manager.register("parted", partitions=3)
    manager.schedule("p", "parted", "x", every=MINUTE, max_retries=0, timeout=5.0)
    clock.advance(MINUTE)
    assert manager.claim_due_schedules().enqueued == 1
    [job] = manager.get_queue("parted").reserve()
    assert (job.partition, job.timeout) == (0, 5.0)
    assert client.hget("pyqcore:{parted#0}:meta", job.id) == b"0:0:1"  # its own max_retries
    manager.get_queue("parted").ack(job)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "cron expression"),
    ({"cron": "every minute"}, "cron expression"),
    ({"cron": "* * * * *", "tz": "Mars/Olympus_Mons"}, "time zone"),
    ({"every": 0}, "every"),
    ({"every": 0.5}, "at least 1 s"),
    ({"every": float("nan")}, "every"),
    ({"every": "60"}, "every"),
    ({"every": 60, "tz": "Europe/Paris"}, "tz= applies to cron"),
    ({"every": 60, "cron": "* * * * *"}, "one of them"),
    ({}, "one of them"),
    ({"every": 60, "catch_up": -1}, "catch_up"),
    ({"every": 60, "max_retries": -1}, "max_retries"),
    ({"every": 60, "timeout": 0}, "timeout"),
    ({"every": 60, "payload": object()}, "JSON"),
    ({"every": 60, "name": "bad#name"}, "schedule name"),
])
def test_a_bad_schedule_is_refused_before_any_write(api: Api, client: Client, clock: FakeClock,
                                                    kwargs: dict[str, Any], message: str) -> None:
    manager = api.QueueManager(client, clock=clock)
    kwargs = dict(kwargs)  # the parameters are shared by every driver and backend
    name = kwargs.pop("name", "s")
    payload = kwargs.pop("payload", None)
    with pytest.raises(ConfigurationError, match=message):
        manager.schedule(name, "q", payload, **kwargs)
    assert all_keys(client) == set()


def test_of_two_claims_of_one_due_time_only_the_first_enqueues(api: Api, client: Client,
                                                                clock: FakeClock) -> None:
    """Two schedulers that read the same due time both send the claim: the script lets the
    first through and changes nothing for the second, nor for a claim of a time to come."""
    start = clock.now
    manager = api.QueueManager(client, clock=clock)
    queue = manager.register("ticks")
    tick = manager.schedule("tick", "ticks", None, every=MINUTE)
    home = queue.core.partitions.parts[0]
    run = api.driver_for(client).run
    due = round((start + MINUTE) * 1000)
    early = home.claim_schedule(tick, due, due + 60_000, [due])
    assert run(early) == 0  # not due yet by the server's clock
    clock.advance(MINUTE)
    first, second = (home.claim_schedule(tick, due, due + 60_000, [due]) for _ in range(2))
    assert (run(first), run(second)) == (1, 0)
    stale = home.claim_schedule(tick, due + 1000, due + 61_000, [due + 1000])
    assert run(stale) == 0  # not the schedule's due time
    assert ready_ids(manager, "ticks") == [run_id("tick", start + MINUTE)]
