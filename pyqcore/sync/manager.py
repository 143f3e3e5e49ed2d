"""``QueueManager``: the registry of queues on the blocking driver (declared in
``pyqcore.api.manager``), and running every registered queue's worker in threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pyqcore.api.manager import ManagerApi
from pyqcore.api.operation import Blocking
from pyqcore.core.slot import WorkerReport
from pyqcore.keys import DEFAULT_PREFIX
from pyqcore.settings import Clock
from pyqcore.sync.dead_letter import DeadLetterQueue
from pyqcore.sync.driver import Client, SyncDriver
from pyqcore.sync.queue import BaseQueue
from pyqcore.sync.worker import Worker, stop_on_signals


class QueueManager(ManagerApi[BaseQueue, DeadLetterQueue], Blocking):
    """Creates, holds and runs the queues of one application, all on one Redis client."""

    queue_class = BaseQueue
    dead_letter_class = DeadLetterQueue

    def __init__(self, client: Client, *, prefix: str = DEFAULT_PREFIX,
                 clock: Clock = time.time, max_redrives: int = 3) -> None:
        self.driver = SyncDriver(client)
        super().__init__(client, prefix=prefix, clock=clock, max_redrives=max_redrives)

    def process_all_queues(
        self,
        *,
        concurrency: int = 1,
        burst: bool = False,
        idle_wait: float = 1.0,
        install_signal_handlers: bool = True,
        stop: threading.Event | None = None,
    ) -> dict[str, WorkerReport]:
        """Run a worker for every registered queue that has a handler, each in its own thread,
        until SIGTERM/SIGINT (or ``stop`` is set, or each is drained in ``burst`` mode)."""
        stop = stop or threading.Event()
        workers = {name: Worker(q, concurrency=concurrency, burst=burst, idle_wait=idle_wait,
                                stop=stop)
                   for name, q in self.runnable_queues().items()}
        reports: dict[str, WorkerReport] = {}

        def run(name: str, worker: Worker) -> Callable[[], None]:
            return lambda: reports.__setitem__(name, worker.run(install_signal_handlers=False))

        threads = [threading.Thread(target=run(n, w), name=f"pyqcore-worker-{n}")
                   for n, w in workers.items()]
        with stop_on_signals(stop, install_signal_handlers):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return reports
