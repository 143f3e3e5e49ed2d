"""pyqcore.asyncio.BaseQueue against a real Redis (one server and a cluster): the same calls and
replies as the sync queue, awaited; and both APIs serving one queue at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from pyqcore import Backoff, ConfigurationError, LeaseLostError, Outcome, SerializationError
from pyqcore import BaseQueue as SyncQueue
from pyqcore.asyncio import BaseQueue
from pyqcore.errors import LockNotAcquiredError
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS, Backend, FakeClock

pytestmark = BOTH_BACKENDS
T = TypeVar("T")


def run(backend: Backend, test: Callable[[BaseQueue], Awaitable[T]], **options: object) -> T:
    """Run ``test`` on a fresh asyncio queue "q" over a new redis.asyncio client."""

    async def main() -> T:
        client = backend.async_client()
        try:
            return await test(BaseQueue(client, name="q", **options))  # type: ignore[arg-type]
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_add_reserve_ack_round_trip(backend: Backend, client: Client) -> None:
    async def test(queue: BaseQueue) -> None:
        job_id = await queue.add({"to": "a@example.com"}, context={"user": 7})
        ids = await queue.add_batch(range(5), job_ids=[None, "x", None, "x", None])
        assert ids[1] == ids[3] == "x" and len(set(ids)) == 4
        jobs = await queue.reserve(count=10)
        assert [j.id for j in jobs] == [job_id, *dict.fromkeys(ids)]
        assert (jobs[0].payload, jobs[0].context, jobs[0].attempt) == (
            {"to": "a@example.com"}, {"user": 7}, 1)
        assert await queue.counts() == {"ready": 0, "delayed": 0, "leased": 5, "dead": 0}
        assert await queue.extend(jobs[0], 60.0) == 1
        assert await queue.release(jobs[1]) == 1
        assert await queue.ack(jobs) == 4  # the released one is no longer held
        assert (await queue.stats())["completed"] == 4

    run(backend, test)


def test_fail_retries_then_buries_and_a_stale_lease_is_refused(
    backend: Backend, client: Client
) -> None:
    clock = FakeClock()

    async def test(queue: BaseQueue) -> None:
        await queue.add("x")
        [first] = await queue.reserve()
        assert await queue.fail(first, RuntimeError("once")) is Outcome.RETRY
        with pytest.raises(LeaseLostError):
            await queue.fail(first, RuntimeError("again"))
        [second] = await queue.reserve()
        assert second.attempt == 2
        assert await queue.fail(second, RuntimeError("twice")) is Outcome.DEAD
        assert (await queue.counts())["dead"] == 1

    run(backend, test, max_retries=1, backoff=Backoff.fixed(0), clock=clock)


def test_bad_input_raises_before_any_write(backend: Backend, client: Client) -> None:
    async def test(queue: BaseQueue) -> None:
        with pytest.raises(SerializationError):
            await queue.add_batch([1, object(), 3])
        with pytest.raises(ConfigurationError):
            await queue.add(1, delay=-1)
        assert await queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}

    run(backend, test)


def test_sync_and_asyncio_queues_share_one_queue(backend: Backend, client: Client) -> None:
    sync = SyncQueue(client, name="q")
    sync.add_batch(["from sync"] * 3)

    async def test(queue: BaseQueue) -> None:
        await queue.add("from asyncio")
        jobs = await queue.reserve(count=2)
        assert [j.payload for j in jobs] == ["from sync", "from sync"]
        [taken] = sync.reserve()
        assert await queue.ack([*jobs, taken]) == 3  # a lease is its token, whoever took it

    run(backend, test)
    assert [j.payload for j in sync.reserve(count=5)] == ["from asyncio"]


def test_item_lock_is_exclusive(backend: Backend, client: Client) -> None:
    async def test(queue: BaseQueue) -> None:
        async with queue.lock("user:7", ttl=5) as token:
            assert token
            with pytest.raises(LockNotAcquiredError):
                async with queue.lock("user:7", wait=0.05):
                    pass
        async with queue.lock("user:7", wait=0.05):
            pass

    run(backend, test)
