"""pyqcore for asyncio: ``QueueManager``, ``BaseQueue``, ``DeadLetterQueue`` and ``Worker`` on a
``redis.asyncio`` client (standalone or cluster), with the names and semantics of the sync API,
awaited. Both are declared once (``pyqcore.api``) over the same flows (``pyqcore.core``); only
the driver differs."""

from pyqcore.asyncio.dead_letter import DeadLetterQueue
from pyqcore.asyncio.manager import QueueManager
from pyqcore.asyncio.queue import AsyncBatchHandler, AsyncHandler, BaseQueue
from pyqcore.asyncio.worker import Worker

__all__ = ["AsyncBatchHandler", "AsyncHandler", "BaseQueue", "DeadLetterQueue", "QueueManager",
           "Worker"]
