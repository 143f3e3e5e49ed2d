"""Handler kinds, on both drivers: a plain ``def`` and an ``async def`` handler (an object with
an ``async def __call__``, a ``def`` returning a coroutine; a ``process_job`` or ``process_jobs``
override; a batch handler) each run to completion before its job is acked, and a failing one
retries and dies as usual.

The sync worker awaits an ``async def`` handler on an event loop its slot owns (the old bug: the
coroutine was created, never awaited, and its job acked unrun); the asyncio worker runs a plain
``def`` one in a thread (``asyncio.to_thread``), so it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import pyqcore.asyncio
from pyqcore import Backoff, BaseQueue, Job, NonRetryableError, WorkerReport
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS, BOTH_DRIVERS, Backend
from tests.support.drivers import Api

pytestmark = BOTH_BACKENDS

# How a handler can be written; each runs the test's check (a plain function) as its work.
KINDS = ("def", "async def", "async __call__", "def returning a coroutine")
EMPTY = {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def handler_of(kind: str, work: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A handler of ``kind`` that does ``work`` (in a thread, as the sync client it may use
    blocks). An async kind suspends first: a coroutine that is never awaited never works."""
    if kind == "def":
        return work

    async def awaited(argument: Any) -> Any:
        await asyncio.sleep(0.001)
        return await asyncio.to_thread(work, argument)

    if kind == "async def":
        return awaited
    if kind == "async __call__":

        class Handler:
            async def __call__(self, argument: Any) -> Any:
                return await awaited(argument)

        return Handler()
    assert kind == "def returning a coroutine"

    def returning(argument: Any) -> Coroutine[Any, Any, Any]:
        return awaited(argument)

    return returning


def is_leased(client: Client, queue: BaseQueue, job: Job) -> bool:
    """Whether ``job``'s delivery still holds its lease (not acked, failed or released)."""
    return client.zscore(queue.keys.key("leased"), f"{job.token}:{job.id}") is not None


@BOTH_DRIVERS
@pytest.mark.parametrize("kind", KINDS)
def test_a_handler_of_every_kind_runs_before_its_job_is_acked(
    api: Api, client: Client, kind: str
) -> None:
    ran: list[tuple[int, bool]] = []

    def work(job: Job) -> None:
        ran.append((job.payload, is_leased(client, queue, job)))

    queue = api.BaseQueue(client, name="h", handler=handler_of(kind, work))
    queue.add_batch(range(6))
    report = queue.process(concurrency=2, burst=True, install_signal_handlers=False)
    assert sorted(ran) == [(i, True) for i in range(6)]  # each ran, while still leased
    assert report == WorkerReport(delivered=6, acked=6)
    assert queue.counts() == EMPTY and queue.stats()["completed"] == 6


@BOTH_DRIVERS
@pytest.mark.parametrize("kind", ["def", "async def"])
def test_a_process_job_override_of_either_kind_runs_before_its_job_is_acked(
    api: Api, client: Client, kind: str
) -> None:
    ran: list[tuple[int, bool]] = []

    def work(queue: BaseQueue, job: Job) -> None:
        ran.append((job.payload, is_leased(client, queue, job)))

    class Plain(api.BaseQueue):  # type: ignore[name-defined,misc]
        name = "h"

        def process_job(self, job: Job) -> None:
            work(self, job)

    class Async(api.BaseQueue):  # type: ignore[name-defined,misc]
        name = "h"

        async def process_job(self, job: Job) -> None:
            await asyncio.sleep(0.001)
            await asyncio.to_thread(work, self, job)

    queue = (Plain if kind == "def" else Async)(client)
    assert queue.has_handler and not queue.handles_batches
    queue.add_batch(range(4))
    report = queue.process(burst=True, install_signal_handlers=False)
    assert sorted(ran) == [(i, True) for i in range(4)]
    assert report == WorkerReport(delivered=4, acked=4)
    assert queue.stats()["completed"] == 4


@BOTH_DRIVERS
@pytest.mark.parametrize("kind", ["def", "async def"])
@pytest.mark.parametrize("given_as", ["batch_handler=", "process_jobs override"])
def test_a_batch_handler_of_either_kind_runs_before_its_jobs_are_acked(
    api: Api, client: Client, kind: str, given_as: str
) -> None:
    """The batch's jobs are all leased while it runs; the failures it reports are retried
    (and then acked), the others acked."""
    ran: list[tuple[int, bool]] = []
    sizes: list[int] = []

    def work(jobs: list[Job]) -> dict[str, BaseException]:
        sizes.append(len(jobs))
        ran.extend((job.payload, is_leased(client, queue, job)) for job in jobs)
        return {job.id: ValueError("again") for job in jobs
                if job.payload == 3 and job.attempt == 1}

    handler = handler_of(kind, work)
    if given_as == "batch_handler=":
        queue = api.BaseQueue(client, name="h", batch_handler=handler, backoff=Backoff.fixed(0))
    else:

        class Batches(api.BaseQueue):  # type: ignore[name-defined,misc]
            name = "h"
            backoff = Backoff.fixed(0)

            def process_jobs(self, jobs: list[Job]) -> Any:
                return handler(jobs)  # returns a coroutine for an async kind: awaited too

        queue = Batches(client)
    assert queue.handles_batches
    queue.add_batch(range(10))
    report = queue.process(burst=True, prefetch=4, install_signal_handlers=False)
    assert sorted(ran) == sorted([(i, True) for i in range(10)] + [(3, True)])
    assert 1 < max(sizes) <= 4  # whole batches, at most prefetch jobs
    assert report == WorkerReport(delivered=11, acked=10, retried=1)
    assert queue.counts() == EMPTY


@BOTH_DRIVERS
@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_handler_of_every_kind_retries_then_dies(
    api: Api, client: Client, kind: str
) -> None:
    """Each failure is raised by the work itself (after an async kind has suspended), so a
    delivery counts as failed only once its handler really ran."""
    ran: list[tuple[str, int]] = []

    def work(job: Job) -> None:
        ran.append((job.payload, job.attempt))
        if job.payload == "flaky" and job.attempt == 1:
            raise ValueError("once")
        if job.payload == "bad":
            raise ValueError("always")
        if job.payload == "poison":
            raise NonRetryableError("never again")

    queue = api.BaseQueue(client, name="h", handler=handler_of(kind, work), max_retries=1,
                          backoff=Backoff.fixed(0))
    queue.add_batch(["ok", "flaky", "bad", "poison"])
    report = queue.process(burst=True, install_signal_handlers=False)
    assert sorted(ran) == [("bad", 1), ("bad", 2), ("flaky", 1), ("flaky", 2), ("ok", 1),
                           ("poison", 1)]
    assert report == WorkerReport(delivered=6, acked=2, retried=2, dead=2)
    assert queue.counts() == {**EMPTY, "dead": 2}


def test_the_sync_worker_awaits_async_handlers_on_its_slots_own_loops(client: Client) -> None:
    """Sync driver only (its threads are the point): each slot thread awaits its handlers on
    one event loop of its own, reused for every job it runs."""
    loops: dict[int, set[int]] = {}
    lock = threading.Lock()
    both_slots = threading.Barrier(2, timeout=10)

    async def handler(job: Job) -> None:
        loop = asyncio.get_running_loop()
        with lock:
            loops.setdefault(threading.get_ident(), set()).add(id(loop))
        if job.attempt == 1 and job.payload < 2:  # the first two jobs: one in each slot
            await asyncio.to_thread(both_slots.wait)

    queue = BaseQueue(client, name="h", handler=handler)
    queue.add_batch(range(20))
    report = queue.process(concurrency=2, burst=True, prefetch=1,
                           install_signal_handlers=False)
    assert report == WorkerReport(delivered=20, acked=20)
    assert len(loops) == 2  # two slot threads
    assert all(len(ids) == 1 for ids in loops.values())  # a loop per slot, not per job
    assert len(set.union(*loops.values())) == 2


def test_a_plain_handler_on_the_asyncio_queue_never_blocks_the_loop(
    backend: Backend, client: Client
) -> None:
    """Asyncio driver only (the loop is the point): while a plain handler blocks on a
    threading.Event, another task on the worker's loop makes progress, and it is that task
    that releases the handler. Had the handler run on the loop, nothing could release it."""
    started, release = threading.Event(), threading.Event()
    handler_threads: list[int] = []
    released: list[bool] = []

    def handler(job: Job) -> None:
        handler_threads.append(threading.get_ident())
        started.set()
        released.append(release.wait(5))

    async def scenario() -> tuple[WorkerReport, int]:
        redis = backend.async_client()
        try:
            queue = pyqcore.asyncio.BaseQueue(redis, name="h", handler=handler)
            await queue.add("blocks")
            worker = asyncio.create_task(
                queue.process(max_jobs=1, install_signal_handlers=False))
            while not started.is_set():
                await asyncio.sleep(0.005)
            ticks = 0
            for _ in range(5):  # this task runs on while the handler blocks its thread
                await asyncio.sleep(0.01)
                ticks += 1
            assert not worker.done()
            assert await queue.counts() == {**EMPTY, "leased": 1}  # not acked while it runs
            release.set()
            return await asyncio.wait_for(worker, 10), ticks
        finally:
            await redis.aclose()

    report, ticks = asyncio.run(scenario())  # the loop runs in this (the main) thread
    assert ticks == 5 and released == [True]
    assert handler_threads and threading.get_ident() not in handler_threads
    assert report == WorkerReport(delivered=1, acked=1)
    assert BaseQueue(client, name="h").counts() == EMPTY
