"""The worker registry, without I/O: every running worker (sync or asyncio) beats its
presence every ``BEAT_SECONDS`` into a hash of its own that expires after ``MISSED_BEATS``
beats, indexed by a sorted set of last beats; a dead worker disappears when its hash expires,
and the index is trimmed by every beat. Plain commands, not Lua: no job's state is involved.
Times are the server's (a ``TIME`` before each beat and listing), so a worker whose clock is
off neither hides the others nor lingers itself.
``CLIENT LIST`` is never used (ACL users and clusters cannot rely on it).

Keys (outside any queue's slot, like ``<prefix>:queues``):
``<prefix>:workers`` ZSET worker id -> last beat (ms);
``<prefix>:worker:<id>`` HASH id, host, pid, driver, queues, slots, started_ms, beat_ms,
done, failed, held (how many), oldest (JSON: up to 10 [job id, seconds held]).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from pyqcore.core.calls import text
from pyqcore.core.clock import server_now_ms
from pyqcore.core.effects import Command, Flow, Pause
from pyqcore.core.queue import QueueCore
from pyqcore.core.slot import Crew
from pyqcore.testing import ManualClock

log = logging.getLogger("pyqcore")

BEAT_SECONDS = 5.0
MISSED_BEATS = 3  # a worker silent this many beats is gone
SHOWN_HELD = 10  # longest-held jobs a beat lists


def workers_key(prefix: str) -> str:
    """The ZSET of worker ids by last beat."""
    return f"{prefix}:workers"


def worker_key(prefix: str, worker_id: str) -> str:
    """The HASH describing one worker."""
    return f"{prefix}:worker:{worker_id}"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One running worker, as its last beat described it."""

    id: str
    host: str
    pid: int
    driver: str  # "sync" or "asyncio"
    queues: list[str]
    slots: int
    started_at: float  # seconds since the epoch
    last_beat: float
    done: int  # jobs acked
    failed: int  # deliveries that failed (retried or dead)
    held: int  # jobs leased now
    oldest: list[tuple[str, float]]  # the longest-held jobs: (id, seconds held)


class Presence:
    """One worker's entry in the registry: what it beats, and the flows that beat and leave."""

    def __init__(self, core: QueueCore, crew: Crew, *, driver: str, slots: int) -> None:
        self.core = core
        self.crew = crew
        self.interval = BEAT_SECONDS  # seconds between beats (at most BEAT_SECONDS)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.static = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                       "driver": driver, "queues": core.name, "slots": slots}
        self.started_ms: int | None = None  # the server's time at the first beat

    def beat(self) -> Flow[None]:
        """Read the server's time, then in one round trip write this worker's hash (expiring
        after MISSED_BEATS beats), index it, and drop index entries whose workers stopped
        beating."""
        prefix = self.core.settings.prefix
        now = yield from server_now_ms(self.core.settings.clock)
        if self.started_ms is None:
            self.started_ms = now
        report = self.crew.tally.snapshot()
        fields: dict[str, Any] = {
            **self.static, "started_ms": self.started_ms, "beat_ms": now, "done": report.acked,
            "failed": report.retried + report.dead, "held": len(self.crew.held),
            "oldest": json.dumps([[job_id, round(age, 1)]
                                  for job_id, age in self.crew.held.oldest(SHOWN_HELD)]),
        }
        flat = [item for pair in fields.items() for item in pair]
        ttl_ms = int(BEAT_SECONDS * MISSED_BEATS * 1000)
        yield [Command(("HSET", worker_key(prefix, self.id), *flat)),
               Command(("PEXPIRE", worker_key(prefix, self.id), ttl_ms)),
               Command(("ZADD", workers_key(prefix), now, self.id)),
               Command(("ZREMRANGEBYSCORE", workers_key(prefix), "-inf", f"({now - ttl_ms}"))]

    def leave(self) -> Flow[None]:
        """Remove this worker from the registry (a graceful stop)."""
        prefix = self.core.settings.prefix
        yield [Command(("DEL", worker_key(prefix, self.id))),
               Command(("ZREM", workers_key(prefix), self.id))]


def presence_loop(presence: Presence) -> Flow[None]:
    """Until the worker has finished: beat every BEAT_SECONDS, then leave. A failed beat or
    leave is logged and skipped: the registry is advisory, and an entry expires by itself."""
    while True:
        try:
            yield from presence.beat()
        except Exception as exc:
            log.warning("worker %s: registry beat failed (%s)", presence.id, exc)
        if (yield Pause(presence.interval, presence.crew.finished)):
            break
    try:
        yield from presence.leave()
    except Exception as exc:
        log.warning("worker %s: leaving the registry failed (%s)", presence.id, exc)


def list_workers(prefix: str, clock: ManualClock | None) -> Flow[list[WorkerInfo]]:
    """The workers that beat within the last MISSED_BEATS beats (by the server's clock, or a
    test's), the oldest first."""
    ttl_ms = int(BEAT_SECONDS * MISSED_BEATS * 1000)
    now_ms = yield from server_now_ms(clock)
    ids = yield Command(("ZRANGEBYSCORE", workers_key(prefix), now_ms - ttl_ms, "+inf"),
                        lambda raw: [text(i) for i in raw])
    if not ids:
        return []
    hashes = yield [Command(("HGETALL", worker_key(prefix, i))) for i in ids]
    workers = [_info(raw) for raw in hashes if raw]
    return sorted(workers, key=lambda w: w.started_at)


def _info(raw: dict[Any, Any]) -> WorkerInfo:
    f = {text(k): text(v) for k, v in raw.items()}
    return WorkerInfo(
        id=f["id"], host=f["host"], pid=int(f["pid"]), driver=f["driver"],
        queues=f["queues"].split(","), slots=int(f["slots"]),
        started_at=int(f["started_ms"]) / 1000, last_beat=int(f["beat_ms"]) / 1000,
        done=int(f["done"]), failed=int(f["failed"]), held=int(f["held"]),
        oldest=[(str(i), float(a)) for i, a in json.loads(f["oldest"])],
    )
