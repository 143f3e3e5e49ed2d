"""pyqcore.core against a real Redis: the calls it builds and the replies it parses, sent by
either driver (``api.driver_for``), to one server and a cluster."""

from __future__ import annotations

from pyqcore.core.calls import PLAIN, QueueCalls, shared_of
from pyqcore.settings import QueueSettings
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def test_a_reservation_says_how_long_until_the_next_event_only_when_it_has_no_job(
    api: Api, client: Client, clock: FakeClock
) -> None:
    calls = QueueCalls(QueueSettings(name="events", clock=clock))
    run = api.driver_for(client).run
    run(calls.add(["later"], [None], shared_of(5.0, None, None), [None])[0])
    run(calls.add(["now"], [None], PLAIN, [None])[0])

    leased = run(calls.lease(1, visibility_timeout=30.0))
    assert [job.payload for job in leased.jobs] == ["now"]
    assert leased.wait_ms is None  # a worker with a job does not need it

    idle = run(calls.lease(1, visibility_timeout=30.0))
    assert idle.jobs == []
    assert idle.wait_ms == 5000  # the delayed job, before the lease
    clock.advance(1.5)
    assert run(calls.lease(1)).wait_ms == 3500  # from the server's now, whatever the caller's

    clock.advance(8.5)  # "later" is due
    assert [job.payload for job in run(calls.lease(1)).jobs] == ["later"]
    idle = run(calls.lease(1))
    assert idle.wait_ms == 20_000  # the earliest lease deadline: "now"'s, leased 10 s ago
