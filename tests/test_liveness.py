"""Liveness without polling: an idle worker, blocked on its wake list for a long ``idle_wait``,
is woken by each event that makes a job ready (an add, a delayed add, a retry, a release, a
redrive, another worker passing the wake on), and a stopping worker gives its unstarted jobs
back. On both drivers, one server and a cluster.

Each worker's client has no socket timeout, so nothing caps ``idle_wait`` (60 s): the test
fails after ``WAKE`` seconds, far sooner, if the event's wake-up is missing. (With the default
client, redis-py's 5 s socket timeout caps the wait at 4 s, and a missing wake-up only looks
like a slow worker.)
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pytest

from pyqcore import Backoff, BaseQueue, Job, Worker, WorkerReport
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, Backend
from tests.support.drivers import Api, in_thread
from tests.support.invariants import primaries
from tests.support.waiting import wait_for

pytestmark = BOTH_DRIVERS_AND_BACKENDS

IDLE = 60.0  # how long an idle worker may block: never reached in a passing test
WAKE = 5.0  # how soon a woken worker must have run the job



def blocked(client: Client) -> int:
    """How many connections of the deployment are blocked in BLPOP (idle worker slots)."""
    return sum(c.get("cmd") == "blpop" and "b" in c.get("flags", "")
               for node in primaries(client) for c in node.client_list())


def unique(name: str) -> str:
    """A queue name of this test alone: a worker a failed test left blocked cannot take the
    next test's wake-ups."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def patient(backend: Backend) -> Iterator[Client]:
    """A client of the deployment without socket timeout (for the workers)."""
    conn = backend.client(socket_timeout=None)
    yield conn
    conn.close()


def patient_queue(api: Api, patient: Client, name: str, handler: Any,
                  **options: Any) -> BaseQueue:
    """A queue of the test's driver on the ``patient`` client."""
    return api.BaseQueue(patient, name=name, handler=handler, **options)


@contextmanager
def idle_worker(api: Api, client: Client, queue: BaseQueue,
                concurrency: int = 1) -> Iterator[BaseQueue]:
    """A worker of ``queue`` (see ``patient_queue``), started and blocked on its wake list
    (all ``concurrency`` slots); stopped at the end, woken by hand (so a missing wake-up fails
    the test, not its teardown)."""
    worker = api.Worker(queue, concurrency=concurrency, idle_wait=IDLE)
    assert worker.idle_wait == IDLE  # no socket timeout caps it: only a wake-up ends a wait
    running: Future[WorkerReport] = in_thread(worker.run, install_signal_handlers=False)
    try:
        wait_for(lambda: blocked(client) >= concurrency or running.done(), what="idle slots")
        assert not running.done(), running.result()
        yield queue
    finally:
        worker.stop.set()
        for part in queue.core.partitions.parts:
            client.rpush(part.keys.key("wake"), *["stop"] * concurrency)
        running.result(10)


def test_an_idle_worker_wakes_for_an_add(api: Api, patient: Client, client: Client) -> None:
    ran = threading.Event()
    queue = patient_queue(api, patient, unique("add"), lambda job: ran.set())
    with idle_worker(api, client, queue):
        queue.add("wake up")
        assert ran.wait(WAKE), "the add did not wake the idle worker"


def test_an_idle_worker_wakes_for_a_delayed_add_and_runs_it_when_due(
    api: Api, patient: Client, client: Client
) -> None:
    """The worker blocked knowing of no due time; a delayed add must wake it to learn of one,
    and it then sleeps until that time."""
    ran: list[float] = []
    queue = patient_queue(api, patient, unique("delayed"), lambda job: ran.append(time.monotonic()))
    with idle_worker(api, client, queue):
        added = time.monotonic()
        queue.add("later", delay=0.5)
        wait_for(lambda: bool(ran), WAKE, "the delayed job to run")
        assert ran[0] - added >= 0.45  # not before it was due


def test_an_idle_worker_wakes_for_a_retry(api: Api, patient: Client, client: Client) -> None:
    """A job failed by another consumer (here the test) goes back to ready: the idle worker
    is woken for it, with no backoff and with one."""
    for backoff in (0.0, 0.3):
        seen: list[int] = []
        queue = patient_queue(api, patient, unique("retry"), lambda job, seen=seen: seen.append(
            job.attempt), backoff=Backoff.fixed(backoff), visibility_timeout=600)
        queue.add("flaky")
        [job] = queue.reserve()  # leased for 600 s: the worker has no reason to wake
        with idle_worker(api, client, queue):
            queue.fail(job, RuntimeError("first try"))  # due now, or in 0.3 s
            wait_for(lambda seen=seen: seen == [2], WAKE,  # type: ignore[misc]
                     f"the retry after {backoff} s to run")


def test_an_idle_worker_wakes_for_a_release(api: Api, patient: Client, client: Client) -> None:
    seen: list[tuple[str, int]] = []
    queue = patient_queue(api, patient, unique("release"),
                          lambda job: seen.append((job.payload, job.attempt)),
                          visibility_timeout=600)
    queue.add("given back")
    [job] = queue.reserve()  # leased for 600 s: the worker has no reason to wake
    with idle_worker(api, client, queue):
        assert queue.release(job) == 1
        wait_for(lambda: seen == [("given back", 1)], WAKE, "the released job to run")


def test_an_idle_worker_wakes_for_a_redrive(api: Api, patient: Client, client: Client) -> None:
    seen: list[str] = []
    name = unique("redrive")
    queue = patient_queue(api, patient, name, lambda job: seen.append(job.payload))
    queue.add("dead, then back")
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("poison"), retry=False)
    assert queue.counts()["dead"] == 1
    with idle_worker(api, client, queue):
        assert api.QueueManager(client).dead_letter_queue.requeue(name) == 1
        wait_for(lambda: seen == ["dead, then back"], WAKE, "the redriven job to run")


def test_a_worker_that_took_part_of_the_work_wakes_another(
    api: Api, patient: Client, client: Client
) -> None:
    """Two idle slots; one add of two jobs leaves one wake-up marker. The slot it wakes leases
    one job (a first batch is one job) and must pass the wake-up on: the two jobs can only
    finish by running at the same time (each waits for the other)."""
    both = threading.Barrier(2)
    together: list[bool] = []

    def meet(job: Job) -> None:
        try:
            both.wait(WAKE)
            together.append(True)
        except threading.BrokenBarrierError:
            together.append(False)

    queue = patient_queue(api, patient, unique("pass-on"), meet, backoff=Backoff.fixed(60))
    with idle_worker(api, client, queue, concurrency=2):
        queue.add_batch(["one", "two"])
        wait_for(lambda: len(together) == 2, 2 * WAKE, "both jobs to run")
        assert together == [True, True], "the second idle slot slept through the backlog"


def key_of_partition(partition: int, count: int) -> str:
    """A partition key that routes to ``partition`` of ``count`` (CRC32, as the queue routes)."""
    return next(key for key in (f"key-{i}" for i in range(1000))
                if zlib.crc32(key.encode()) % count == partition)


def test_an_idle_worker_wakes_for_an_add_to_any_partition(
    api: Api, backend: Backend, patient: Client, client: Client
) -> None:
    """On one server an idle worker blocks on every partition's wake list at once. (A cluster
    cannot BLPOP across slots: there it watches one partition per idle_wait, by design.)"""
    if backend.is_cluster:
        pytest.skip("on a cluster an idle worker watches one partition at a time")
    seen: list[str] = []
    queue = patient_queue(api, patient, unique("parts"), lambda job: seen.append(job.payload),
                          partitions=4)
    with idle_worker(api, client, queue):
        for p in (3, 1, 2, 0, 3, 2, 1, 0):
            wait_for(lambda: blocked(client) == 1, what="the worker to be idle")
            queue.add(f"to {p}", partition_key=key_of_partition(p, 4))
            wait_for(lambda p=p: seen[-1:] == [f"to {p}"], WAKE,  # type: ignore[misc]
                     f"the job added to partition {p} to run")


def test_a_stopping_worker_gives_its_unstarted_jobs_back(api: Api, client: Client) -> None:
    """A stop request while a slot holds a batch: the job running finishes and is acked, the
    rest of the batch goes back to the front of ready, in order, its delivery not counted."""
    name = unique("stop")
    leased_key = BaseQueue(client, name=name).keys.key("leased")
    worker: list[Worker] = []
    ran: list[int] = []

    def handler(job: Job) -> None:
        ran.append(job.payload)
        if client.zcount(leased_key, "-inf", "(inf") > 1:  # this slot holds more of its batch
            worker[0].stop.set()

    queue = api.BaseQueue(client, name=name, handler=handler)
    queue.add_batch(range(200))
    worker.append(api.Worker(queue, prefetch=50, idle_wait=IDLE))
    report = worker[0].run(install_signal_handlers=False)
    assert report.released > 0, "the stop came after the slot's batches grew: it never did"
    assert report == WorkerReport(delivered=len(ran) + report.released, acked=len(ran),
                                  released=report.released)
    assert queue.counts() == {"ready": 200 - len(ran), "delayed": 0, "leased": 0, "dead": 0}
    rest = queue.reserve(count=200)
    assert [j.payload for j in rest] == list(range(len(ran), 200))  # released ones first
    assert {j.attempt for j in rest} == {1}
