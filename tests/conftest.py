"""Test fixtures: one real redis-server per session, started on a free port (never 6379, never
a server we did not start), flushed between tests; and a fake clock for time-driven paths."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from pyqcore import QueueManager
from pyqcore.local_redis import LocalRedis


class FakeClock:
    """A clock the test moves by hand: scripts get time from it, so expiry is deterministic."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture
def client(redis_server: LocalRedis) -> Iterator[redis.Redis]:
    conn = redis_server.client()
    conn.flushall()
    yield conn
    conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(client: redis.Redis, clock: FakeClock) -> QueueManager:
    return QueueManager(client, clock=clock)
