"""The worker loop: outcomes, stop conditions, concurrency, heartbeats, wake-ups, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pyqcore import (
    Backoff,
    BaseQueue,
    ConfigurationError,
    Job,
    NonRetryableError,
    Worker,
    WorkerReport,
)
from pyqcore.core.calls import text
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS, Backend, FakeClock, primaries

pytestmark = BOTH_BACKENDS

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: object, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true (polling a condition, not sleeping a guess)."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_burst_processes_everything_then_returns(client: Client) -> None:
    seen: list[int] = []
    queue = BaseQueue(client, name="w", handler=lambda job: seen.append(job.payload))
    queue.add_batch(range(100))
    report = queue.process(concurrency=4, burst=True)
    assert sorted(seen) == list(range(100))
    assert report == WorkerReport(delivered=100, acked=100)
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_failures_retry_then_die_and_the_worker_carries_on(client: Client) -> None:
    def handler(job: Job) -> None:
        if job.payload == "bad":
            raise ValueError("always fails")
        if job.payload == "fatal":
            raise NonRetryableError("do not retry")

    queue = BaseQueue(client, name="w", handler=handler, max_retries=2,
                      backoff=Backoff.fixed(0))
    queue.add_batch(["ok", "bad", "fatal", "ok"])
    report = queue.process(burst=True)
    assert report == WorkerReport(delivered=6, acked=2, retried=2, dead=2)
    assert queue.counts()["dead"] == 2


def test_a_batch_handler_gets_whole_batches_and_its_failures_are_per_job(
    client: Client,
) -> None:
    batches: list[list[int]] = []

    def handle(jobs: list[Job]) -> dict[str, BaseException]:
        batches.append([job.payload for job in jobs])
        return {job.id: (NonRetryableError("no") if job.payload == 13 else ValueError("again"))
                for job in jobs if job.payload in (7, 13) and job.attempt == 1}

    queue = BaseQueue(client, name="w", batch_handler=handle, backoff=Backoff.fixed(0))
    queue.add_batch(range(50))
    report = queue.process(burst=True, prefetch=20)
    assert report == WorkerReport(delivered=51, acked=49, retried=1, dead=1)
    assert max(map(len, batches)) > 1 and max(map(len, batches)) <= 20
    assert sorted(p for batch in batches for p in batch) == sorted([*range(50), 7])
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}


def test_a_batch_handler_that_raises_fails_every_job_of_the_batch(client: Client) -> None:
    class Flaky(BaseQueue):
        name = "w"
        max_retries = 1
        backoff = Backoff.fixed(0)

        def process_jobs(self, jobs: list[Job]) -> None:
            if any(job.payload == "poison" for job in jobs):
                raise RuntimeError("the batch went wrong")

    queue = Flaky(client)
    assert queue.handles_batches
    queue.add_batch(["a", "poison", "b"])
    report = queue.process(burst=True, prefetch=1)  # one job per batch: only poison fails
    assert report == WorkerReport(delivered=4, acked=2, retried=1, dead=1)
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}


def test_handler_and_batch_handler_are_exclusive(client: Client) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        BaseQueue(client, name="w", handler=print, batch_handler=lambda jobs: None)
    assert not BaseQueue(client, name="w", handler=print).handles_batches


def test_max_jobs_counts_deliveries_whatever_their_outcome(client: Client) -> None:
    def handler(job: Job) -> None:
        if job.payload % 2:
            raise RuntimeError("odd")

    queue = BaseQueue(client, name="w", handler=handler, backoff=Backoff.fixed(60))
    queue.add_batch(range(10))
    report = queue.process(concurrency=3, max_jobs=5, idle_wait=0.05)
    assert report.delivered == 5
    assert report.acked + report.retried == 5
    assert queue.counts()["ready"] == 5


def test_corrupt_record_is_buried_and_the_rest_processed(client: Client) -> None:
    seen: list[str] = []
    queue = BaseQueue(client, name="w", handler=lambda job: seen.append(job.payload))
    ids = queue.add_batch(["a", "b", "c"])
    client.hset(queue.keys.key("jobs"), ids[1], b"\x93\x01")  # a truncated array
    report = queue.process(burst=True)
    assert seen == ["a", "c"]
    assert (report.acked, report.dead) == (2, 1)


def test_handlers_run_concurrently(client: Client) -> None:
    barrier = threading.Barrier(4, timeout=10)
    queue = BaseQueue(client, name="w", handler=lambda job: barrier.wait())
    queue.add_batch(range(4))
    report = queue.process(concurrency=4, burst=True)
    assert report.acked == 4  # a serial worker would break the barrier (BrokenBarrierError)


def test_a_blocked_worker_wakes_on_add_without_polling(client: Client) -> None:
    done = threading.Event()
    queue = BaseQueue(client, name="w", handler=lambda job: done.set())
    worker = threading.Thread(
        target=queue.process,
        kwargs={"max_jobs": 1, "idle_wait": 30.0, "install_signal_handlers": False})
    worker.start()
    wait_for(lambda: any(c.get("cmd") == "blpop"
                         for node in primaries(client) for c in node.client_list()))
    queue.add("wake up")
    assert done.wait(5), "the worker slept through the add"
    worker.join(5)
    assert not worker.is_alive()


def test_heartbeat_keeps_a_long_job_from_being_redelivered(client: Client) -> None:
    attempts: list[int] = []

    def long_job(job: Job) -> None:
        attempts.append(job.attempt)
        time.sleep(1.2)  # the work itself: four visibility timeouts long

    queue = BaseQueue(client, name="w", visibility_timeout=0.3, handler=long_job)
    queue.add("long")
    thief = BaseQueue(client, name="w", visibility_timeout=0.3)
    worker = threading.Thread(target=queue.process,
                              kwargs={"max_jobs": 1, "install_signal_handlers": False})
    worker.start()
    wait_for(lambda: attempts)
    stolen = []
    deadline = time.monotonic() + 10
    while worker.is_alive() and time.monotonic() < deadline:
        stolen += thief.reserve()  # would reclaim the job if its lease lapsed
        time.sleep(0.05)
    assert not worker.is_alive()
    assert attempts == [1]
    assert stolen == []
    assert queue.stats()["completed"] == 1


def test_delayed_job_wakes_a_sleeping_worker_when_due(client: Client) -> None:
    queue = BaseQueue(client, name="w", handler=lambda job: None)
    queue.add("soon", delay=0.3)
    started = time.monotonic()
    report = queue.process(max_jobs=1, idle_wait=30.0, install_signal_handlers=False)
    assert report.acked == 1
    assert time.monotonic() - started < 5  # woke at the due time, not after idle_wait


def start_worker(backend: Backend, visibility_timeout: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", backend.server.url,
         str(visibility_timeout), backend.name],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)


def wait_started(client: Client, count: int) -> list[str]:
    started = []
    for _ in range(count):
        item = client.blpop(["test:started"], timeout=20)
        assert item is not None, "the worker process did not start jobs"
        started.append(text(item[1]))
    return started


def test_sigterm_finishes_in_flight_jobs_and_returns_unstarted_ones(
    backend: Backend, client: Client
) -> None:
    queue = BaseQueue(client, name="signals")
    queue.add_batch(range(5))
    worker = start_worker(backend, visibility_timeout=30)
    in_flight = wait_started(client, 2)
    worker.send_signal(signal.SIGTERM)
    for job_id in in_flight:
        client.rpush(f"test:release:{job_id}", 1)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0
    report = json.loads(out)
    assert report["acked"] == 2
    assert client.get("test:done") == b"2"
    assert queue.counts() == {"ready": 3, "delayed": 0, "leased": 0, "dead": 0}
    assert all(job.attempt == 1 for job in queue.reserve(count=3))


def test_sigkilled_worker_loses_nothing(backend: Backend, client: Client) -> None:
    queue = BaseQueue(client, name="signals")
    ids = queue.add_batch(range(6))
    worker = start_worker(backend, visibility_timeout=5)
    in_flight = wait_started(client, 2)
    worker.kill()
    worker.wait(10)
    assert queue.counts()["leased"] == 2
    later = FakeClock(time.time() + 6)  # the visibility timeout has passed
    survivor = BaseQueue(client, name="signals", clock=later)
    jobs = survivor.reserve(count=10)
    redelivered = {j.id: j.attempt for j in jobs if j.id in in_flight}
    assert redelivered == {job_id: 2 for job_id in in_flight}
    assert sorted(j.id for j in jobs) == sorted(ids)
    assert survivor.ack(jobs) == 6
    stats = survivor.stats()
    assert (stats["added"], stats["completed"], stats["reclaimed"]) == (6, 6, 2)


def test_blocking_waits_stay_below_the_socket_timeout(backend: Backend) -> None:
    """A BLPOP longer than the client's socket timeout would fail (and could take a wake-up
    marker down with its connection) instead of waking: the worker caps its waits."""
    queue = BaseQueue(backend.client(socket_timeout=0.5), name="w", handler=lambda job: None)
    assert Worker(queue, idle_wait=30.0).idle_wait == pytest.approx(0.4)
    assert Worker(queue, idle_wait=0.1).idle_wait == pytest.approx(0.1)
