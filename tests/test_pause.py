"""Pause and resume: a paused queue leases nothing new while leased jobs settle and adds go on;
the pause lives in Redis, so it holds across worker restarts and other queue objects; a resume
wakes the workers. On the sync and the asyncio driver, one server and a cluster."""

from __future__ import annotations

import threading

from pyqcore import BaseQueue, WorkerReport
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api, in_thread, stop_waiting_worker
from tests.support.waiting import wait_for
from tests.test_worker import blocked_on_blpop

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    return api.BaseQueue(client, name="pz", clock=clock, **options)  # type: ignore[arg-type]


def test_a_paused_queue_leases_nothing_while_leased_jobs_settle(api: Api, client: Client,
                                                                clock: FakeClock) -> None:
    queue = make(api, client, clock)
    queue.add_batch(range(3))
    [held] = queue.reserve()
    assert not queue.is_paused()
    assert queue.pause() is True
    assert queue.pause() is False  # already paused
    assert queue.is_paused() and make(api, client, clock).is_paused()
    queue.add("more")  # adds go on
    assert queue.reserve(count=10) == []
    assert queue.ack(held) == 1  # what was leased settles
    assert queue.counts() == {"ready": 3, "delayed": 0, "leased": 0, "dead": 0}
    assert queue.resume() is True
    assert queue.resume() is False
    assert [j.payload for j in queue.reserve(count=10)] == [1, 2, "more"]


def test_a_pause_holds_across_worker_restarts(api: Api, client: Client,
                                              clock: FakeClock) -> None:
    ran: list[int] = []
    make(api, client, clock).pause()
    queue = make(api, client, clock, handler=lambda job: ran.append(job.payload))
    queue.add_batch(range(5))
    assert queue.process(burst=True) == WorkerReport()  # a new worker: still paused
    again = make(api, client, clock, handler=lambda job: ran.append(job.payload))
    assert again.process(burst=True) == WorkerReport()
    assert ran == []
    again.resume()
    assert again.process(burst=True).acked == 5
    assert ran == [0, 1, 2, 3, 4]


def test_a_resume_wakes_a_waiting_worker(api: Api, client: Client, patient_client: Client,
                                          clock: FakeClock) -> None:
    done = threading.Event()
    queue = make(api, patient_client, clock, handler=lambda job: done.set())
    queue.pause()
    queue.add("job")
    worker = api.Worker(queue, idle_wait=30.0)
    run = in_thread(worker.run, install_signal_handlers=False)
    wait_for(lambda: blocked_on_blpop(client))  # it looked, found the queue paused, waits
    assert not done.is_set()
    queue.resume()  # the resume pushes a wake-up: no 30 s wait
    assert done.wait(10)
    assert stop_waiting_worker(worker, run, client, queue).acked == 1


def test_a_partitioned_queue_pauses_every_partition(api: Api, client: Client,
                                                    clock: FakeClock) -> None:
    queue = make(api, client, clock, partitions=3)
    queue.add_batch(range(6))
    queue.pause()
    assert all(client.exists(p.keys.key("paused")) for p in queue.core.partitions.parts)
    assert all(queue.reserve(count=10) == [] for _ in range(3))
    queue.resume()
    assert sum(len(queue.reserve(count=10)) for _ in range(3)) == 6
