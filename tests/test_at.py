"""``add(..., at=datetime)`` and ``add_batch(..., at=...)``: an absolute due time, which the
enqueue script takes as is ("@ms") and compares with the server's clock; on both drivers, one
server and a cluster (the fake clock stands in for the server's)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pyqcore import BaseQueue, ConfigurationError
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS

PLUS_TWO = timezone(timedelta(hours=2))


def make(api: Api, client: Client, clock: FakeClock) -> BaseQueue:
    return api.BaseQueue(client, name="at", clock=clock)


def instant(clock: FakeClock, seconds: float, tz: timezone = timezone.utc) -> datetime:
    """The time ``seconds`` after the clock's now, as an aware datetime in ``tz``."""
    return datetime.fromtimestamp(clock.now + seconds, tz)


def test_a_job_added_at_a_time_is_due_exactly_then(api: Api, client: Client,
                                                    clock: FakeClock) -> None:
    queue = make(api, client, clock)
    job_id = queue.add("report", at=instant(clock, 3600, PLUS_TWO))  # any zone: one instant
    assert queue.counts() == {"ready": 0, "delayed": 1, "leased": 0, "dead": 0}
    assert client.zscore("pyqcore:{at}:delayed", job_id) == clock.now_ms() + 3_600_000
    clock.advance(3599.999)
    assert queue.reserve() == []
    clock.advance(0.001)
    [job] = queue.reserve()
    assert (job.id, job.payload) == (job_id, "report")
    queue.ack(job)


def test_a_time_that_has_passed_makes_the_job_ready_now(api: Api, client: Client,
                                                        clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add("late", at=instant(clock, -30))
    queue.add("ancient", at=datetime(1969, 7, 20, tzinfo=timezone.utc))  # before the epoch
    assert queue.counts() == {"ready": 2, "delayed": 0, "leased": 0, "dead": 0}
    assert [job.payload for job in queue.reserve(count=2)] == ["late", "ancient"]


def test_a_batch_added_at_a_time(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock)
    ids = queue.add_batch(["a", "b", "c"], at=instant(clock, 10))
    scores = {client.zscore("pyqcore:{at}:delayed", i) for i in ids}
    assert scores == {clock.now_ms() + 10_000}
    clock.advance(10)
    assert [job.payload for job in queue.reserve(count=3)] == ["a", "b", "c"]


def test_adds_at_different_times_sent_together_keep_their_times(api: Api, client: Client,
                                                                clock: FakeClock) -> None:
    """Concurrent adds share an enqueue call only when they are due alike."""
    queue = make(api, client, clock)
    times = [instant(clock, s) for s in (5, 5, 9)]
    ids = [queue.add(i, at=t) for i, t in enumerate(times)]
    assert [client.zscore("pyqcore:{at}:delayed", i) for i in ids] == [
        clock.now_ms() + 5000, clock.now_ms() + 5000, clock.now_ms() + 9000]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"at": datetime(2030, 1, 1)}, "timezone-aware"),  # naive: which zone? refused
    ({"at": "2030-01-01T00:00:00Z"}, "timezone-aware"),
    ({"at": 1_900_000_000}, "timezone-aware"),
    ({"at": datetime(2030, 1, 1, tzinfo=timezone.utc), "delay": 5.0}, "not both"),
    ({"at": datetime(2030, 1, 1, tzinfo=timezone.utc), "delay": 0.0}, "not both"),
])
def test_bad_at_is_refused_before_any_write(api: Api, client: Client, clock: FakeClock,
                                            kwargs: dict[str, object], message: str) -> None:
    queue = make(api, client, clock)
    with pytest.raises(ConfigurationError, match=message):
        queue.add("x", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=message):
        queue.add_batch(["x"], **kwargs)  # type: ignore[arg-type]
    assert all_keys(client) == set()
