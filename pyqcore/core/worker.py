"""What a worker is apart from how it runs (threads or tasks), shared by the sync and asyncio
``Worker``: its queue, the crew its slots share, and its entry in the worker registry."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from pyqcore.core.effects import Flag
from pyqcore.core.presence import Presence
from pyqcore.core.queue import QueueCore
from pyqcore.core.slot import Crew, WorkerOptions, WorkerReport

if TYPE_CHECKING:
    from typing_extensions import Unpack


class WorkerBase:
    """What a worker is apart from how it runs (threads or tasks): its queue and the crew its
    slots share. ``queue`` is a ``BaseQueue`` of either driver."""

    def __init__(self, queue: Any, *, concurrency: int, stop: Flag, finished: Flag,
                 driver: str, **options: Unpack[WorkerOptions]) -> None:
        if not queue.has_handler:
            raise queue.missing_handler()
        self.queue = queue
        self.core: QueueCore = queue.core
        self.concurrency = concurrency
        self.crew = Crew.of(queue.core, batches=queue.handles_batches, stop=stop,
                            finished=finished, concurrency=concurrency,
                            longest_block=queue.driver.longest_block(), **options)
        self.idle_wait = self.crew.idle_wait  # capped below the client's socket timeout
        self.presence = Presence(queue.core, self.crew, driver=driver, slots=concurrency,
                                 clock=queue.core.settings.clock)

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self.crew.tally.snapshot()


def may_install_signal_handlers(install: bool) -> bool:
    """Signal handlers can only be installed from the main thread (and only when asked)."""
    return install and threading.current_thread() is threading.main_thread()
