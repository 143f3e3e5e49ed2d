"""The asyncio driver with tasks cancelled mid-add, on a real Redis (one server and a cluster):
the cancellation reaches the coalescing flow, so the adds of the other tasks carry on."""

from __future__ import annotations

import asyncio
from typing import Any

import pyqcore
import pyqcore.asyncio
from tests.conftest import BOTH_BACKENDS, Backend, primaries

pytestmark = BOTH_BACKENDS


def test_cancelled_adds_are_not_sent_and_the_others_are(backend: Backend) -> None:
    admin = backend.client()
    admin.flushall()

    async def scenario() -> list[Any]:
        client = backend.async_client()
        queue = pyqcore.asyncio.BaseQueue(client, name="q")
        await queue.add("announces the queue")
        for node in primaries(admin):
            node.client_pause(60_000, all=False)  # the next add's call stays in flight
        try:
            tasks = [asyncio.create_task(queue.add(f"job {i}")) for i in range(6)]
            await asyncio.sleep(0)  # each task has run up to its first wait
            tasks[3].cancel()  # waiting for its turn: never sent
            await asyncio.sleep(0)
            tasks[0].cancel()  # in flight, alone (redis-py 8 lets such a command finish)
            await asyncio.sleep(0)
        finally:
            for node in primaries(admin):
                node.client_unpause()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        return results

    results = asyncio.run(scenario())
    assert isinstance(results[3], asyncio.CancelledError)
    ids = [results[i] for i in (1, 2, 4, 5)]
    assert all(isinstance(i, str) for i in ids) and len(set(ids)) == 4
    jobs = pyqcore.BaseQueue(admin, name="q").reserve(count=100)
    sent = {"announces the queue", "job 1", "job 2", "job 4", "job 5"}
    if not isinstance(results[0], asyncio.CancelledError):
        sent.add("job 0")
    assert {job.payload for job in jobs} == sent
    admin.close()
