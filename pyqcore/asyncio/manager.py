"""``QueueManager`` on the asyncio driver: the registry of ``pyqcore.QueueManager`` (both
declared once in ``pyqcore.api.manager``), awaited, running every queue's worker as tasks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pyqcore.api.manager import AllWorkerOptions, ManagerApi
from pyqcore.api.operation import Awaiting
from pyqcore.asyncio.dead_letter import DeadLetterQueue
from pyqcore.asyncio.driver import AsyncClient, AsyncDriver
from pyqcore.asyncio.queue import BaseQueue
from pyqcore.asyncio.worker import Worker, stop_on_signals
from pyqcore.core.slot import WorkerReport
from pyqcore.core.worker import reports_of

if TYPE_CHECKING:
    from typing_extensions import Unpack


class QueueManager(ManagerApi[AsyncClient, BaseQueue, DeadLetterQueue], Awaiting):
    """Creates, holds and runs the queues of one application on one redis.asyncio client."""

    driver_class = AsyncDriver
    queue_class = BaseQueue
    dead_letter_class = DeadLetterQueue
    worker_class = Worker

    async def process_all_queues(
        self, *, install_signal_handlers: bool = True, stop: asyncio.Event | None = None,
        **options: Unpack[AllWorkerOptions],
    ) -> dict[str, WorkerReport]:
        """Run a worker for every registered queue that has a handler, as tasks on this loop
        (see ``pyqcore.QueueManager.process_all_queues``)."""
        stop = stop or asyncio.Event()
        workers = self.workers_for_all(stop, **options)
        with stop_on_signals(stop, install_signal_handlers):
            outcomes = await asyncio.gather(*(w.run(install_signal_handlers=False)
                                              for w in workers.values()), return_exceptions=True)
        return reports_of(dict(zip(workers, outcomes, strict=True)))
