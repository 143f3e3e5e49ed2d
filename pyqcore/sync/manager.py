"""``QueueManager``: the registry of queues on the blocking driver (declared in
``pyqcore.api.manager``), and running every registered queue's worker in threads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pyqcore.api.manager import AllWorkerOptions, ManagerApi
from pyqcore.api.operation import Blocking
from pyqcore.core.slot import WorkerReport
from pyqcore.sync.dead_letter import DeadLetterQueue
from pyqcore.sync.driver import Client, SyncDriver
from pyqcore.sync.queue import BaseQueue
from pyqcore.sync.worker import Worker, run_in_threads, stop_on_signals

if TYPE_CHECKING:
    from typing_extensions import Unpack


class QueueManager(ManagerApi[Client, BaseQueue, DeadLetterQueue], Blocking):
    """Creates, holds and runs the queues of one application, all on one Redis client."""

    driver_class = SyncDriver
    queue_class = BaseQueue
    dead_letter_class = DeadLetterQueue
    worker_class = Worker

    def process_all_queues(
        self, *, install_signal_handlers: bool = True, stop: threading.Event | None = None,
        **options: Unpack[AllWorkerOptions],
    ) -> dict[str, WorkerReport]:
        """Run a worker for every registered queue that has a handler, each in its own thread,
        until SIGTERM/SIGINT (or ``stop`` is set, or each is drained in ``burst`` mode)."""
        stop = stop or threading.Event()
        workers = self.workers_for_all(stop, **options)
        with stop_on_signals(stop, install_signal_handlers):
            return run_in_threads(workers)
