"""The worker loop: outcomes, stop conditions, concurrency, heartbeats, wake-ups, signals; on
the sync and the asyncio driver (``api``: a plain ``def`` handler runs in the sync worker's
slot thread, and in a thread of the asyncio worker's loop), one server and a cluster."""

from __future__ import annotations

import json
import os
import select
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
    WorkerReport,
)
from pyqcore.core.calls import text
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, Backend, FakeClock
from tests.support.drivers import Api, in_thread
from tests.support.invariants import primaries
from tests.support.waiting import wait_for

pytestmark = BOTH_DRIVERS_AND_BACKENDS

ROOT = Path(__file__).resolve().parent.parent



def blocked_on_blpop(client: Client) -> bool:
    """Whether some connection of the deployment is blocked in BLPOP (an idle worker)."""
    return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "")
               for node in primaries(client) for c in node.client_list())


def test_burst_processes_everything_then_returns(api: Api, client: Client) -> None:
    seen: list[int] = []
    queue = api.BaseQueue(client, name="w", handler=lambda job: seen.append(job.payload))
    queue.add_batch(range(100))
    report = queue.process(concurrency=4, burst=True)
    assert sorted(seen) == list(range(100))
    assert report == WorkerReport(delivered=100, acked=100)
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_failures_retry_then_die_and_the_worker_carries_on(api: Api, client: Client) -> None:
    def handler(job: Job) -> None:
        if job.payload == "bad":
            raise ValueError("always fails")
        if job.payload == "fatal":
            raise NonRetryableError("do not retry")

    queue = api.BaseQueue(client, name="w", handler=handler, max_retries=2,
                          backoff=Backoff.fixed(0))
    queue.add_batch(["ok", "bad", "fatal", "ok"])
    report = queue.process(burst=True)
    assert report == WorkerReport(delivered=6, acked=2, retried=2, dead=2)
    assert queue.counts()["dead"] == 2


def test_a_batch_handler_gets_whole_batches_and_its_failures_are_per_job(
    api: Api, client: Client,
) -> None:
    batches: list[list[int]] = []

    def handle(jobs: list[Job]) -> dict[str, BaseException]:
        batches.append([job.payload for job in jobs])
        return {job.id: (NonRetryableError("no") if job.payload == 13 else ValueError("again"))
                for job in jobs if job.payload in (7, 13) and job.attempt == 1}

    queue = api.BaseQueue(client, name="w", batch_handler=handle, backoff=Backoff.fixed(0))
    queue.add_batch(range(50))
    report = queue.process(burst=True, prefetch=20)
    assert report == WorkerReport(delivered=51, acked=49, retried=1, dead=1)
    assert max(map(len, batches)) > 1 and max(map(len, batches)) <= 20
    assert sorted(p for batch in batches for p in batch) == sorted([*range(50), 7])
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}


def test_a_batch_handler_that_raises_fails_every_job_of_the_batch(api: Api, client: Client) -> None:
    class Flaky(api.BaseQueue):  # type: ignore[name-defined,misc]
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


def test_handler_and_batch_handler_are_exclusive(api: Api, client: Client) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        api.BaseQueue(client, name="w", handler=print, batch_handler=lambda jobs: None)
    assert not api.BaseQueue(client, name="w", handler=print).handles_batches


def test_max_jobs_counts_deliveries_whatever_their_outcome(api: Api, client: Client) -> None:
    def handler(job: Job) -> None:
        if job.payload % 2:
            raise RuntimeError("odd")

    queue = api.BaseQueue(client, name="w", handler=handler, backoff=Backoff.fixed(60))
    queue.add_batch(range(10))
    report = queue.process(concurrency=3, max_jobs=5, idle_wait=0.05)
    assert report.delivered == 5
    assert report.acked + report.retried == 5
    assert queue.counts()["ready"] == 5


def test_corrupt_record_is_buried_and_the_rest_processed(api: Api, client: Client) -> None:
    seen: list[str] = []
    queue = api.BaseQueue(client, name="w", handler=lambda job: seen.append(job.payload))
    ids = queue.add_batch(["a", "b", "c"])
    client.hset(queue.keys.key("jobs"), ids[1], b"\x93\x01")  # a truncated array
    report = queue.process(burst=True)
    assert seen == ["a", "c"]
    assert (report.acked, report.dead) == (2, 1)


def test_handlers_run_concurrently(api: Api, client: Client) -> None:
    barrier = threading.Barrier(4, timeout=10)
    queue = api.BaseQueue(client, name="w", handler=lambda job: barrier.wait())
    queue.add_batch(range(4))
    report = queue.process(concurrency=4, burst=True)
    assert report.acked == 4  # a serial worker would break the barrier (BrokenBarrierError)


def test_a_blocked_worker_wakes_on_add_and_stops_on_request(api: Api, backend: Backend,
                                                            client: Client) -> None:
    done = threading.Event()
    patient = backend.client(socket_timeout=None)  # nothing caps idle_wait: only a wake wakes
    queue = api.BaseQueue(patient, name="w", handler=lambda job: done.set())
    worker = api.Worker(queue, idle_wait=30.0)
    running = in_thread(worker.run, install_signal_handlers=False)
    wait_for(lambda: blocked_on_blpop(client))
    assert not done.is_set()
    queue.add("wake up")
    assert done.wait(5), "the worker slept through the add"  # woken by its marker, not a poll
    wait_for(lambda: blocked_on_blpop(client) and queue.counts()["leased"] == 0)  # idle again
    worker.stop.set()
    queue.add("after stop")  # wakes the blocked slot, which now stops instead
    assert running.result(10) == WorkerReport(delivered=1, acked=1)
    assert queue.counts() == {"ready": 1, "delayed": 0, "leased": 0, "dead": 0}


def test_heartbeat_keeps_a_long_job_from_being_redelivered(api: Api, client: Client) -> None:
    """A job held for several visibility timeouts stays leased: the worker's heartbeat (a
    thread of the sync worker, a task of the asyncio one) keeps moving its deadline on, and a
    second worker reserving all along never reclaims it."""
    held: list[Job] = []
    finish = threading.Event()

    def long_job(job: Job) -> None:
        held.append(job)
        assert finish.wait(10)  # the work itself: until the test has seen enough renewals

    visibility = 0.3
    queue = api.BaseQueue(client, name="w", visibility_timeout=visibility, handler=long_job)
    queue.add("long")
    thief = api.BaseQueue(client, name="w", visibility_timeout=visibility)
    running = in_thread(queue.process, max_jobs=1, install_signal_handlers=False)
    wait_for(lambda: held)
    [job] = held
    lease = (queue.keys.key("leased"), f"{job.token}:{job.id}")
    started = time.monotonic()
    deadlines = {client.zscore(*lease)}
    stolen: list[Job] = []
    try:
        while (time.monotonic() - started < 3 * visibility or len(deadlines) < 3) and not (
                stolen or None in deadlines):
            assert time.monotonic() - started < 10, f"renewed {len(deadlines) - 1}x in 10 s"
            stolen += thief.reserve()  # would reclaim the job if its lease lapsed
            deadlines.add(client.zscore(*lease))
            time.sleep(0.02)
    finally:
        finish.set()
    assert None not in deadlines  # leased all along, under the first delivery's token
    assert running.result(10) == WorkerReport(delivered=1, acked=1)
    assert [j.attempt for j in held] == [1]
    assert stolen == []
    assert queue.stats()["completed"] == 1


def test_delayed_job_wakes_a_sleeping_worker_when_due(api: Api, backend: Backend,
                                                      client: Client) -> None:
    """A worker asleep with a long idle_wait is woken by a delayed add, and then sleeps only
    until the job is due. (The client has no socket timeout, so nothing caps the wait: a
    worker not woken would sleep the whole minute.)"""
    patient = backend.client(socket_timeout=None)
    done = threading.Event()
    queue = api.BaseQueue(patient, name="w", handler=lambda job: done.set())
    running = in_thread(queue.process, max_jobs=1, idle_wait=60.0, install_signal_handlers=False)
    wait_for(lambda: blocked_on_blpop(patient))
    queue.add("soon", delay=0.3)
    assert done.wait(5), "the delayed add did not wake the sleeping worker"
    assert running.result(10).acked == 1
    patient.close()


def start_worker(backend: Backend, visibility_timeout: float, driver: str,
                 stderr: int | None = None) -> subprocess.Popen[str]:
    """A worker process of ``driver`` (see tests/worker_process.py): a signal goes to a
    process, so these tests run their worker there and watch Redis from here."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.worker_process", backend.server.url,
         str(visibility_timeout), backend.name, driver],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_logged(worker: subprocess.Popen[str], text: str, timeout: float = 20.0) -> None:
    """Read the worker process's stderr (a pipe) until it holds ``text``."""
    assert worker.stderr is not None
    fd, seen = worker.stderr.fileno(), b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"the worker did not log {text!r} in {timeout} s: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"the worker exited without logging {text!r}: {seen!r}"
            seen += chunk


def wait_started(client: Client, count: int) -> list[str]:
    started = []
    for _ in range(count):
        item = client.blpop(["test:started"], timeout=20)
        assert item is not None, "the worker process did not start jobs"
        started.append(text(item[1]))
    return started


def test_sigterm_finishes_in_flight_jobs_and_returns_unstarted_ones(
    api: Api, backend: Backend, client: Client
) -> None:
    queue = BaseQueue(client, name="signals")  # the test's view; the worker is the process's
    queue.add_batch(range(5))
    worker = start_worker(backend, visibility_timeout=30, driver=api.name, stderr=subprocess.PIPE)
    in_flight = wait_started(client, 2)
    worker.send_signal(signal.SIGTERM)
    wait_logged(worker, "SIGTERM received")  # handled: from now on no job starts
    for job_id in in_flight:
        client.rpush(f"test:release:{job_id}", 1)
    out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0
    report = json.loads(out)
    assert report["acked"] == 2
    assert client.get("test:done") == b"2"
    assert queue.counts() == {"ready": 3, "delayed": 0, "leased": 0, "dead": 0}
    assert all(job.attempt == 1 for job in queue.reserve(count=3))


def test_sigkilled_worker_loses_nothing(api: Api, backend: Backend, client: Client) -> None:
    queue = BaseQueue(client, name="signals")  # the test's view; the worker is the process's
    ids = queue.add_batch(range(6))
    worker = start_worker(backend, visibility_timeout=5, driver=api.name)
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


def test_blocking_waits_stay_below_the_socket_timeout(api: Api, backend: Backend) -> None:
    """A BLPOP longer than the client's socket timeout would fail (and could take a wake-up
    marker down with its connection) instead of waking: the worker caps its waits."""
    timing_out = backend.client(socket_timeout=0.5)
    queue = api.BaseQueue(timing_out, name="w", handler=lambda job: None)
    assert api.Worker(queue, idle_wait=30.0).idle_wait == pytest.approx(0.4)
    assert api.Worker(queue, idle_wait=0.1).idle_wait == pytest.approx(0.1)
    timing_out.close()
