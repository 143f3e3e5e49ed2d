"""pyqcore.core against a real Redis: the calls it builds and the replies it parses, sent by
either driver (``api.driver_for``), to one server and a cluster."""

from __future__ import annotations

from pyqcore.core.calls import QueueCalls
from pyqcore.settings import QueueSettings
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def test_a_reservation_names_the_next_event_only_when_it_has_no_job(
    api: Api, client: Client, clock: FakeClock
) -> None:
    calls = QueueCalls(QueueSettings(name="events", clock=clock))
    run = api.driver_for(client).run
    now = clock.now
    run(calls.add(["later"], [None], 5.0, [None])[0])
    run(calls.add(["now"], [None], 0.0, [None])[0])

    leased = run(calls.lease(1, visibility_timeout=30.0))
    assert [job.payload for job in leased.jobs] == ["now"]
    assert leased.next_event_ms is None  # a worker with a job does not need it

    idle = run(calls.lease(1, visibility_timeout=30.0))
    assert idle.jobs == []
    assert idle.next_event_ms == int((now + 5.0) * 1000)  # the delayed job, before the lease

    clock.advance(10.0)  # "later" is due
    assert [job.payload for job in run(calls.lease(1)).jobs] == ["later"]
    idle = run(calls.lease(1))
    assert idle.next_event_ms == int((now + 30.0) * 1000)  # the earliest lease deadline: "now"'s
