"""Schedulers as real processes (``pyqcore scheduler``), on the Redis server's own clock: three
of them on a schedule every second for about ten seconds, with a worker taking the jobs as they
come (so an idempotent id could not hide a run added twice): every due time is added exactly
once and none is skipped. And a worker's own scheduler (``process(schedules=True)``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from datetime import datetime

from pyqcore import QueueManager, Worker
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS, FakeClock
from tests.support import LocalRedis
from tests.support.drivers import Api, in_thread
from tests.support.waiting import wait_for


def due_ms(job_id: str) -> int:
    """A run's due time from its id, "tick@2027-01-15T08:00:01.000Z"."""
    stamp = job_id.split("@", 1)[1].replace("Z", "+00:00")
    return round(datetime.fromisoformat(stamp).timestamp() * 1000)


def test_three_schedulers_add_every_due_time_exactly_once(redis_server: LocalRedis,
                                                          client: Client) -> None:
    manager = QueueManager(client)
    seen: list[str] = []
    queue = manager.register("ticks", handler=lambda job: seen.append(job.id))
    manager.schedule("tick", "ticks", {"n": 1}, every=1)
    command = [sys.executable, "-m", "pyqcore", "--url", redis_server.url, "scheduler",
               "--log-level", "warning"]
    schedulers = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
                  for _ in range(3)]
    worker = Worker(queue, idle_wait=0.2)
    running = in_thread(worker.run, install_signal_handlers=False)
    try:
        wait_for(lambda: len(seen) >= 10, 60)  # about ten seconds of a schedule every second
    finally:
        for process in schedulers:
            process.send_signal(signal.SIGTERM)
        errors = [process.communicate(timeout=30)[1] for process in schedulers]
    assert [p.returncode for p in schedulers] == [0, 0, 0], errors
    wait_for(lambda: queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}, 60)
    worker.stop.set()
    running.result(30)
    assert len(seen) == len(set(seen))  # each due time once
    dues = sorted(due_ms(job_id) for job_id in seen)
    assert dues == list(range(dues[0], dues[-1] + 1, 1000))  # none skipped
    assert queue.stats()["added"] == len(seen)


@BOTH_DRIVERS
def test_a_worker_with_schedules_adds_the_runs_of_its_queue(api: Api, client: Client,
                                                            clock: FakeClock) -> None:
    manager = api.QueueManager(client, clock=clock)
    ran = threading.Event()
    queue = manager.register("mine", handler=lambda job: ran.set())
    manager.schedule("mine-every-minute", "mine", "x", every=60)
    manager.schedule("someone-elses", "theirs", "y", every=60)
    clock.advance(60)
    worker = api.Worker(queue, schedules=True, idle_wait=0.2)
    running = in_thread(worker.run, install_signal_handlers=False)
    assert ran.wait(30)
    worker.stop.set()
    assert running.result(30).acked == 1
    assert client.llen("pyqcore:{theirs}:ready") == 0  # not its queue's schedule
