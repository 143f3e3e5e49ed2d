"""The bench's pyqcore application, for the multi-process drain: ``pyqcore worker
pyqcore_app:manager --processes 2`` (run from bench/peers) imports it in the supervisor and in
each worker process. One queue, ``bench``, whose handler is the shared INCR body."""

from __future__ import annotations

import _shared as s
import redis

from pyqcore import Job, QueueManager

BODY = s.Body()


def handle(job: Job) -> None:
    BODY(job.payload)


manager = QueueManager(redis.Redis.from_url(s.url_at_import()))
manager.register("bench", handler=handle)
