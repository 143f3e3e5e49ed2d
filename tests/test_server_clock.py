"""The queue's one clock is the Redis server's. The production scripts read ``TIME`` (to the
millisecond), only when they need the time, and take none from their caller; a queue refuses
any clock but a test's ``ManualClock``, whose script variant is apart from production (its
own SHAs). Times are checked against the server's own ``TIME`` read around each call."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from pyqcore import Backoff, BaseQueue, NonRetryableError, QueueManager
from pyqcore.errors import ConfigurationError
from pyqcore.scripts import load_scripts
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def between(client: redis.Redis, action: Callable[[], Any]) -> tuple[int, Any, int]:
    """The server's time (ms) before ``action``, what it returned, and the time after."""
    before = server_ms(client)
    result = action()
    return before, result, server_ms(client)


def test_leases_delays_and_deaths_are_timed_by_the_server_to_the_millisecond(
        client: redis.Redis) -> None:
    queue = BaseQueue(client, name="clock", max_retries=1, backoff=Backoff.fixed(2.0))
    queue.add("warm-up")  # the announcement: not timed below
    [warm] = queue.reserve()
    queue.ack(warm)

    before, _, after = between(client, lambda: queue.add("later", delay=60.0, job_id="later"))
    due = client.zscore(queue.keys.key("delayed"), "later")
    assert due is not None and before + 60_000 <= due <= after + 60_000

    queue.add("now")
    before, [job], after = between(client, lambda: queue.reserve(visibility_timeout=30.0))
    assert before + 30_000 <= round(job.lease_deadline * 1000) <= after + 30_000

    before, held, after = between(client, lambda: queue.extend(job, 45.0))
    assert held == 1 and before + 45_000 <= round(job.lease_deadline * 1000) <= after + 45_000

    before, _, after = between(client, lambda: queue.fail(job, RuntimeError("again")))
    retry_due = client.zscore(queue.keys.key("delayed"), job.id)
    assert retry_due is not None and before + 2000 <= retry_due <= after + 2000

    queue.add("poison", job_id="poison")
    [bad] = [j for j in queue.reserve(count=10) if j.id == "poison"]
    before, _, after = between(client, lambda: queue.fail(bad, NonRetryableError("no")))
    died = client.zscore(queue.keys.key("dead"), "poison")
    assert died is not None and before <= died <= after


def test_an_idle_reservation_says_how_long_to_wait_by_the_servers_clock(
        client: redis.Redis) -> None:
    queue = BaseQueue(client, name="wait")
    queue.add("later", delay=60.0)
    part = queue.core.partitions.parts[0]
    added = server_ms(client)
    reservation = queue.driver.run(part.lease(1))
    waited = server_ms(client) - added
    assert reservation.jobs == []
    assert reservation.wait_ms is not None
    assert 60_000 - waited - 5 <= reservation.wait_ms <= 60_000


def commandstats(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_time_is_read_only_by_the_calls_that_need_it(client: redis.Redis) -> None:
    """A plain add, an ack and a release read no clock (the hot path does not pay for it); a
    delayed add and a reserve read it once each."""
    queue = BaseQueue(client, name="cheap")
    queue.add("announce")  # the first call also reads TIME once, for the record dates
    client.config_resetstat()
    queue.add("a")
    queue.add_batch(["b", "c"])
    assert commandstats(client).get("time", 0) == 0
    queue.add("d", delay=5.0)
    assert commandstats(client)["time"] == 1
    jobs = queue.reserve(count=2)
    assert commandstats(client)["time"] == 2
    queue.ack(jobs[:1])
    queue.release(jobs[1:])
    assert commandstats(client)["time"] == 2


def test_a_producer_dates_its_records_by_the_servers_clock(client: redis.Redis) -> None:
    queue = BaseQueue(client, name="dated")
    before, _, after = between(client, lambda: queue.add("x"))
    [job] = queue.reserve()
    # this process's clock and the server's are the same machine's: the offset is ~0, and the
    # record's date is within the call (give or take the offset's round-trip error)
    assert before - 50 <= round(job.enqueued_at * 1000) <= after + 50


@pytest.mark.parametrize("clock", [time.time, time.monotonic, lambda: 1_800_000_000.0, 5])
def test_only_a_manual_clock_is_accepted(client: redis.Redis, clock: Any) -> None:
    with pytest.raises(ConfigurationError, match="ManualClock"):
        BaseQueue(client, name="q", clock=clock)
    with pytest.raises(ConfigurationError, match="ManualClock"):
        QueueManager(client, clock=clock)
    with pytest.raises(ConfigurationError, match="ManualClock"):
        QueueSettings(name="q", clock=clock)
    BaseQueue(client, name="q", clock=ManualClock())  # a test's clock is fine


def test_production_scripts_take_no_time_from_their_caller() -> None:
    production, variant = load_scripts(), load_scripts(manual_clock=True)
    readers = {name for name, s in production.items() if s.reads_clock}
    assert readers == {"enqueue", "reserve", "fail", "extend", "redrive", "purge", "complete",
                       "schedules", "schedule_claim", "cancel", "clear"}  # (cancel, clear:
    # the time a cancelled job is kept with, on a queue that keeps finished jobs)
    for name, script in production.items():
        assert "table.remove(ARGV" not in script.source, name
        assert "redis.call('TIME')" in script.source or name not in readers
        twin = variant[name]
        assert twin.argv == script.argv and twin.header == script.header  # one contract
        assert (twin.sha != script.sha) == (name in readers), name
        assert ("table.remove(ARGV, 1)" in twin.source) == (name in readers), name


def test_ages_shown_to_users_are_measured_on_the_servers_clock(client: redis.Redis) -> None:
    manager = QueueManager(client)
    before, now, after = between(client, manager.server_time)
    assert before <= round(now * 1000) <= after + 1
    assert QueueManager(client, clock=ManualClock(5.0)).server_time() == 5.0
    queue = manager.register("aged")
    added = server_ms(client)
    queue.add("waiting")
    before, snap, after = between(client, manager.snapshot)
    age = snap["aged"].oldest_ready_age
    assert age is not None and before - added - 50 <= age * 1000 <= after - added + 50
