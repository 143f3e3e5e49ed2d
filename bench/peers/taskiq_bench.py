"""taskiq's adapter (bench/.venvs/taskiq) with taskiq-redis's ``RedisStreamBroker`` (Redis
streams with acknowledgements; the list broker has none). Single add: ``task.kiq``; taskiq has
no bulk API; concurrent adds: a gather of ``task.kiq``. Workers: ``taskiq worker``; ``c1`` is
``--workers 1 --max-async-tasks 1``, ``best`` is ``--workers 1 --max-async-tasks N``, ``p2``
is ``--workers 2 --max-async-tasks N``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import _shared as s
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(s.url_at_import())
BODY = s.AsyncBody()


async def _job(data: dict[str, Any]) -> None:
    await BODY(data)


job = broker.task(task_name="job")(_job)


def enqueue_single(opts: s.Options, n: int) -> None:
    async def go() -> None:
        await broker.startup()
        for i in range(n):
            await job.kiq(s.payload(i))
        await broker.shutdown()

    asyncio.run(go())


def enqueue_concurrent(opts: s.Options, n: int) -> None:
    async def go() -> None:
        await broker.startup()
        await s.gathered(job.kiq, n)
        await broker.shutdown()

    asyncio.run(go())


def prefill(opts: s.Options, n: int) -> None:
    """Untimed: 100 concurrent sends at a time."""
    async def go() -> None:
        await broker.startup()
        for start in range(0, n, 100):
            await asyncio.gather(*(job.kiq(s.payload(i))
                                   for i in range(start, min(n, start + 100))))
        await broker.shutdown()

    asyncio.run(go())


def tasks(opts: s.Options) -> int:
    return 1 if opts.setting == "c1" else opts.concurrency


def processes(opts: s.Options) -> int:
    return s.PROCESSES if opts.setting == "p2" else 1


def settings(opts: s.Options) -> str:
    return f"taskiq worker --workers {processes(opts)} --max-async-tasks {tasks(opts)}"


def worker(opts: s.Options) -> list[str]:
    return [sys.executable, "-m", "taskiq", "worker", "taskiq_bench:broker", "--workers",
            str(processes(opts)), "--max-async-tasks", str(tasks(opts)), "--log-level",
            "WARNING"]


def produce(opts: s.Options, rate: float, seconds: float) -> int:
    async def go() -> int:
        await broker.startup()
        sent = await s.send_paced_async(job.kiq, rate, seconds)
        await broker.shutdown()
        return sent

    return asyncio.run(go())


ADAPTER = s.Adapter(
    name="taskiq", script=__file__, enqueue_single=enqueue_single, enqueue_bulk=None,
    settings=settings, worker=worker, produce=produce, prefill=prefill,
    enqueue_concurrent=enqueue_concurrent, processes="flag",
)

if __name__ == "__main__":
    s.main(ADAPTER, sys.argv[1:])
