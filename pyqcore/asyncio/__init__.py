"""pyqcore for asyncio: ``BaseQueue`` on a ``redis.asyncio`` client (standalone or cluster), with
awaitable methods and ``async def process_job``. Same jobs, keys and scripts as the sync API."""

from pyqcore.asyncio.queue import AsyncBatchHandler, AsyncHandler, BaseQueue
from pyqcore.asyncio.worker import Worker

__all__ = ["AsyncBatchHandler", "AsyncHandler", "BaseQueue", "Worker"]
