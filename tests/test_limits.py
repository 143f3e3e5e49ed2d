"""Fleet-wide limits inside reserve: max_active (leases held at once) and rate_limit (starts in
any sliding window), by hand and on a fleet of workers moved by the test's clock; their
settings' checks; their split over partitions. On the sync and the asyncio driver, one server
and a cluster."""

from __future__ import annotations

import threading

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, Job
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys, primaries
from tests.support.drivers import Api, in_thread, stop_waiting_worker
from tests.support.waiting import wait_for
from tests.support.windows import most_in_window

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(0))
    return api.BaseQueue(client, name="lim", clock=clock, **options)  # type: ignore[arg-type]



def reserve_calls(client: Client) -> int:
    """EVALSHA calls counted by every primary since the test's CONFIG RESETSTAT."""
    return sum(int(node.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
               for node in primaries(client))


# -- max_active --------------------------------------------------------------------------------

def test_max_active_caps_the_leases_held_at_once(api: Api, client: Client,
                                                 clock: FakeClock) -> None:
    queue = make(api, client, clock, max_active=3)
    other = make(api, client, clock, max_active=3)  # another worker's view of the same queue
    queue.add_batch(range(10))
    first = queue.reserve(count=2)
    assert [len(first), len(other.reserve(count=10)), len(queue.reserve(count=10))] == [2, 1, 0]
    queue.ack(first[0])
    assert len(other.reserve(count=10)) == 1
    queue.fail(first[1], RuntimeError("again"))  # a failed delivery frees its place too
    assert [j.payload for j in queue.reserve(count=10)] == [4]
    assert queue.counts()["leased"] == 3


def test_max_active_is_never_exceeded_by_a_fleet(api: Api, client: Client,
                                                 clock: FakeClock) -> None:
    lock = threading.Lock()
    state = {"running": 0, "peak": 0}
    full = threading.Event()

    def handler(job: Job) -> None:
        with lock:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            if state["running"] == 4:
                full.set()
        full.wait(0.05)  # overlap with the others (long enough to, never a condition)
        with lock:
            state["running"] -= 1

    queues = [make(api, client, clock, handler=handler, max_active=4) for _ in range(3)]
    queues[0].add_batch(range(120))
    runs = [in_thread(q.process, concurrency=4, burst=True, idle_wait=0.1, prefetch=2)
            for q in queues]
    assert sum(run.result(60).acked for run in runs) == 120
    assert state["peak"] == 4


def test_an_ack_wakes_a_worker_waiting_for_a_place(api: Api, client: Client,
                                                   patient_client: Client,
                                                   clock: FakeClock) -> None:
    done = threading.Event()
    queue = make(api, patient_client, clock, max_active=1, handler=lambda job: done.set())
    queue.add_batch(["held", "next"])
    [held] = queue.reserve()
    worker = api.Worker(queue, idle_wait=30.0)
    run = in_thread(worker.run, install_signal_handlers=False)
    wait_for(lambda: client.exists(queue.keys.key("starved")) == 1, 20)  # it found no place
    queue.ack(held)  # the ack wakes it: no 30 s wait
    assert done.wait(10)
    assert stop_waiting_worker(worker, run, client, queue).acked == 1


# -- rate_limit --------------------------------------------------------------------------------

def test_rate_limit_counts_starts_in_a_sliding_window(api: Api, client: Client,
                                                      clock: FakeClock) -> None:
    queue = make(api, client, clock, rate_limit=(3, 1.0))
    queue.add_batch(range(20))
    assert len(queue.reserve(count=2)) == 2
    clock.advance(0.5)
    assert len(queue.reserve(count=10)) == 1
    assert queue.reserve(count=10) == []
    clock.advance(0.5)
    assert queue.reserve(count=10) == []  # the window [t - 1 s, t] holds both ends
    clock.advance(0.001)
    assert len(queue.reserve(count=10)) == 2  # the two from 1.001 s ago left; not the third
    clock.advance(0.5)
    assert len(queue.reserve(count=10)) == 1
    assert client.zcard(queue.keys.key("limiter")) == 3  # the log holds at most n entries


def test_a_start_is_never_logged_before_the_newest_start(api: Api, client: Client,
                                                        clock: FakeClock) -> None:
    """A caller whose clock is behind the log's newest start (the server's clock stepped back,
    or a test's clock read before another caller's) starts nothing until that time: the
    entries it would count were trimmed by the later look."""
    queue = make(api, client, clock, rate_limit=(5, 1.0))
    queue.add_batch(range(10))
    assert len(queue.reserve(count=2)) == 2
    clock.advance(-0.5)
    reservation = queue.driver.run(queue.core.partitions.parts[0].lease(5))
    assert (len(reservation.jobs), reservation.wait_ms, reservation.rate_limited) == (0, 500, True)
    clock.advance(0.5)
    assert len(queue.reserve(count=10)) == 3


def test_a_rate_limited_reserve_says_how_long_to_wait(api: Api, client: Client,
                                                      clock: FakeClock) -> None:
    queue = make(api, client, clock, rate_limit=(2, 2.0))
    queue.add_batch(range(5))
    queue.reserve(count=5)
    clock.advance(0.5)
    reservation = queue.driver.run(queue.core.partitions.parts[0].lease(5))
    assert (reservation.jobs, reservation.wait_ms, reservation.rate_limited) == (
        [], 1501, True)


def test_rate_limit_holds_for_a_fleet_and_its_long_run_rate_is_the_limit(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    """A fleet (3 workers x 3 slots) drains a backlog under rate_limit=(25, 0.25 s): the test
    moves the clock a window and a millisecond at a time, once the workers took every start
    the window allowed. No closed window of 0.25 s holds more than 25 starts (lease times, on
    the scripts' clock); the rate over the run is 25 per 251 ms, within 2% of 100/s; and the
    workers wait for the next window without polling (few reserve calls per window)."""
    n, seconds, windows = 25, 0.25, 8
    lock = threading.Lock()
    starts: list[int] = []

    def handler(job: Job) -> None:
        with lock:
            starts.append(round(job.lease_deadline * 1000) - 30_000)  # leased at, in ms

    queues = [make(api, client, clock, handler=handler, rate_limit=(n, seconds))
              for _ in range(3)]
    queues[0].add_batch(range(n * windows + 10))
    for node in primaries(client):
        node.config_resetstat()
    workers = [api.Worker(q, concurrency=3) for q in queues]
    runs = [in_thread(w.run, install_signal_handlers=False) for w in workers]
    for window in range(1, windows + 1):
        wait_for(lambda: len(starts) >= n * window, 20)  # noqa: B023 - read at once
        assert len(starts) == n * window  # no more until the clock moves
        clock.advance(seconds + 0.001)
    calls = reserve_calls(client)
    for w in workers:
        w.stop.set()
    assert sum(run.result(40).acked for run in runs) >= n * windows
    ordered = sorted(starts[: n * windows])
    assert most_in_window(ordered, round(seconds * 1000)) == n
    rate = (len(ordered) - n) / ((ordered[-1] - ordered[0]) / 1000)
    assert rate == pytest.approx(n / seconds, rel=0.02)
    assert calls < windows * 9 * 4  # a polling slot would make hundreds per window


# -- settings and partitions -------------------------------------------------------------------

@pytest.mark.parametrize(("option", "bad"), [
    ("rate_limit", (0, 1.0)), ("rate_limit", (5, 0)), ("rate_limit", (5,)),
    ("rate_limit", "5/s"), ("rate_limit", (5.5, 1)), ("rate_limit", (True, 1)),
    ("rate_limit", (5, float("nan"))), ("max_active", 0), ("max_active", 2.5),
    ("max_active", True), ("group_concurrency", 0), ("group_concurrency", "1"),
    ("group_rate_limit", (1, -1)), ("group_rate_limit", [1, 2, 3]),
])
def test_bad_flow_settings_are_refused_before_any_write(api: Api, client: Client,
                                                        clock: FakeClock, option: str,
                                                        bad: object) -> None:
    with pytest.raises(ConfigurationError, match=option.split("_", maxsplit=1)[0]):
        make(api, client, clock, **{option: bad})

    with pytest.raises(ConfigurationError, match=option.split("_", maxsplit=1)[0]):
        type("Q", (api.BaseQueue,), {"name": "lim", option: bad})(client, clock=clock)
    with pytest.raises(ConfigurationError, match=option.split("_", maxsplit=1)[0]):
        api.QueueManager(client, clock=clock).register("lim", **{option: bad})
    assert all_keys(client) == set()


def test_a_queue_wide_limit_is_shared_by_the_partitions(api: Api, client: Client,
                                                        clock: FakeClock) -> None:
    queue = make(api, client, clock, partitions=3, rate_limit=(7, 1.0), max_active=100)
    queue.add_batch(range(30))
    leased = [queue.reserve(count=30) for _ in range(4)]
    assert sum(map(len, leased)) == 7  # 3 + 2 + 2
    with pytest.raises(ConfigurationError, match="rate_limit"):
        make(api, client, clock, partitions=3, rate_limit=(2, 1.0))
    with pytest.raises(ConfigurationError, match="max_active"):
        make(api, client, clock, partitions=3, max_active=2)
    capped = api.BaseQueue(client, name="cap", clock=clock, partitions=2, max_active=3)
    capped.add_batch(range(10))
    assert sum(len(capped.reserve(count=10)) for _ in range(3)) == 3
