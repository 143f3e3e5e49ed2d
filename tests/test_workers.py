"""The worker registry on real Redis, both drivers, both backends: a running worker is listed
by ``manager.workers()`` with its queue, slots and the jobs it holds; it leaves when it stops;
one that died disappears once it has missed its beats."""

from __future__ import annotations

import os
import threading

from pyqcore import Job, QueueManager
from pyqcore.core.presence import BEAT_SECONDS, MISSED_BEATS
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api, in_thread
from tests.support.waiting import wait_for

pytestmark = BOTH_DRIVERS_AND_BACKENDS



def test_a_running_worker_is_listed_with_what_it_holds_and_leaves_when_it_stops(
    api: Api, client: Client
) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow(job: Job) -> None:
        started.set()
        assert release.wait(10)

    manager = api.QueueManager(client)
    queue = manager.register("mail", handler=slow)
    queue.add("hello")
    worker = api.Worker(queue, concurrency=3, idle_wait=0.2)
    worker.presence.interval = 0.05
    running = in_thread(worker.run, install_signal_handlers=False)
    assert started.wait(10)
    wait_for(lambda: [w.held for w in manager.workers()] == [1])
    [me] = manager.workers()
    assert (me.queues, me.slots, me.pid, me.done) == (["mail"], 3, os.getpid(), 0)
    assert [job_id for job_id, _ in me.oldest] == ["1"]
    assert me.driver == api.name
    release.set()
    wait_for(lambda: [w.done for w in manager.workers()] == [1])
    worker.stop.set()
    running.result(10)
    assert manager.workers() == []  # left on a graceful stop, not after a timeout


def test_a_worker_that_stopped_beating_is_not_listed(api: Api, client: Client,
                                                     clock: FakeClock) -> None:
    """A worker killed without leaving: its entry is shown until it has missed its beats."""
    manager = api.QueueManager(client, clock=clock)
    queue = manager.register("mail", handler=lambda job: None)
    worker = api.Worker(queue, burst=True)
    worker.presence.interval = 0.05
    worker.queue.driver.run(worker.presence.beat())  # one beat, then silence (a SIGKILL)
    assert [w.id for w in manager.workers()] == [worker.presence.id]
    clock.advance(BEAT_SECONDS * MISSED_BEATS + 0.001)
    assert manager.workers() == []


def test_workers_of_another_prefix_are_not_listed(api: Api, client: Client) -> None:
    mine = api.QueueManager(client, prefix="mine")
    other = QueueManager(client, prefix="other")
    worker = api.Worker(mine.register("q", handler=lambda job: None), burst=True)
    worker.queue.driver.run(worker.presence.beat())
    assert len(mine.workers()) == 1 and other.workers() == []
