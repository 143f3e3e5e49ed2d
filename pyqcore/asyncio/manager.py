"""``QueueManager`` on the asyncio driver: the registry of ``pyqcore.QueueManager`` (both
declared once in ``pyqcore.api.manager``), awaited, running every queue's worker as tasks."""

from __future__ import annotations

import asyncio
import time

from pyqcore.api.manager import ManagerApi
from pyqcore.api.operation import Awaiting
from pyqcore.asyncio.dead_letter import DeadLetterQueue
from pyqcore.asyncio.driver import AsyncClient, AsyncDriver
from pyqcore.asyncio.queue import BaseQueue
from pyqcore.asyncio.worker import Worker, stop_on_signals
from pyqcore.core.slot import WorkerReport
from pyqcore.keys import DEFAULT_PREFIX
from pyqcore.settings import Clock


class QueueManager(ManagerApi[BaseQueue, DeadLetterQueue], Awaiting):
    """Creates, holds and runs the queues of one application on one redis.asyncio client."""

    queue_class = BaseQueue
    dead_letter_class = DeadLetterQueue

    def __init__(self, client: AsyncClient, *, prefix: str = DEFAULT_PREFIX,
                 clock: Clock = time.time, max_redrives: int = 3) -> None:
        self.driver = AsyncDriver(client)
        super().__init__(client, prefix=prefix, clock=clock, max_redrives=max_redrives)

    async def process_all_queues(
        self, *, concurrency: int = 1, burst: bool = False, idle_wait: float = 1.0,
        install_signal_handlers: bool = True, stop: asyncio.Event | None = None,
    ) -> dict[str, WorkerReport]:
        """Run a worker for every registered queue that has a handler, as tasks, until
        SIGTERM/SIGINT (or ``stop`` is set, or each is drained in ``burst`` mode)."""
        stop = stop or asyncio.Event()
        workers = {name: Worker(q, concurrency=concurrency, burst=burst, idle_wait=idle_wait,
                                stop=stop)
                   for name, q in self.runnable_queues().items()}
        with stop_on_signals(stop, install_signal_handlers):
            reports = await asyncio.gather(*(w.run(install_signal_handlers=False)
                                             for w in workers.values()))
        return dict(zip(workers, reports, strict=True))
