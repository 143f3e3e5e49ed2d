"""The asyncio worker: outcomes, batches, wake-ups and stopping, on real Redis."""

from __future__ import annotations

import asyncio

from pyqcore import Backoff, Job, NonRetryableError, WorkerReport
from pyqcore.asyncio import BaseQueue, Worker
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS, Backend, primaries

pytestmark = BOTH_BACKENDS


async def blocked_on_blpop(client: Client) -> None:
    """Until some connection of the deployment is blocked in BLPOP (the idle worker)."""

    def blocked() -> bool:
        return any(c.get("cmd") == "blpop" and "b" in c.get("flags", "")
                   for node in primaries(client) for c in node.client_list())

    for _ in range(1000):
        if await asyncio.to_thread(blocked):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no worker blocked on the wake list")


def test_burst_runs_every_job_with_retries_and_dead_letters(
    backend: Backend, client: Client
) -> None:
    seen: list[int] = []

    async def handle(job: Job) -> None:
        await asyncio.sleep(0)
        if job.payload == 3 and job.attempt == 1:
            raise ValueError("flaky")
        if job.payload == 4:
            raise NonRetryableError("poison")
        seen.append(job.payload)

    async def main() -> WorkerReport:
        redis = backend.async_client()
        queue = BaseQueue(redis, name="w", handler=handle, backoff=Backoff.fixed(0))
        await queue.add_batch(range(20))
        report = await queue.process(concurrency=4, burst=True)
        assert await queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 1}
        await redis.aclose()
        return report

    report = asyncio.run(main())
    assert report == WorkerReport(delivered=21, acked=19, retried=1, dead=1)
    assert sorted(seen) == [i for i in range(20) if i != 4]


def test_batch_handler_gets_whole_batches(backend: Backend, client: Client) -> None:
    sizes: list[int] = []

    class Counter(BaseQueue):
        name = "w"

        async def process_jobs(self, jobs: list[Job]) -> dict[str, BaseException]:
            sizes.append(len(jobs))
            return {job.id: RuntimeError("odd") for job in jobs if job.payload == 7}

    async def main() -> WorkerReport:
        redis = backend.async_client()
        queue = Counter(redis, max_retries=0)
        await queue.add_batch(range(40))
        report = await queue.process(burst=True, prefetch=16)
        await redis.aclose()
        return report

    report = asyncio.run(main())
    assert report == WorkerReport(delivered=40, acked=39, dead=1)
    assert sum(sizes) == 40 and 1 < max(sizes) <= 16


def test_a_blocked_worker_wakes_on_add_and_stops_on_request(
    backend: Backend, client: Client
) -> None:
    async def main() -> WorkerReport:
        redis = backend.async_client()
        got = asyncio.Event()

        async def handle(job: Job) -> None:
            got.set()

        queue = BaseQueue(redis, name="w", handler=handle)
        worker = Worker(queue, idle_wait=30.0)
        running = asyncio.create_task(worker.run(install_signal_handlers=False))
        await blocked_on_blpop(client)
        assert not got.is_set()
        await queue.add("wake up")
        await asyncio.wait_for(got.wait(), 5)  # woken by the add's marker, not a poll
        await blocked_on_blpop(client)  # idle again, its job acked
        worker.stop.set()
        await queue.add("after stop")
        report = await asyncio.wait_for(running, 35)
        assert (await queue.counts())["ready"] == 1
        await redis.aclose()
        return report

    assert asyncio.run(main()) == WorkerReport(delivered=1, acked=1)
