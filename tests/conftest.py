"""Test fixtures: real Redis deployments started on free ports (never 6379, never a server we
did not start), flushed between tests; and a fake clock for time-driven paths.

The behavioural modules run on two backends: one ``redis-server`` and a local Redis Cluster of
three primaries (both started once per session, the cluster only if a test asks for it). A
module opts in with ``pytestmark = BOTH_BACKENDS``; the ``client`` fixture then hands each test
a ``redis.Redis`` or a ``RedisCluster``. The helpers below read state across every primary, so
an assertion about "the whole database" holds on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.cluster import RedisCluster

from pyqcore import QueueManager
from pyqcore.asyncio.driver import AsyncClient
from pyqcore.local_redis import LocalRedis, LocalRedisCluster
from pyqcore.sync.driver import Client

BACKENDS = ("single", "cluster")
BOTH_BACKENDS = pytest.mark.parametrize("backend", BACKENDS, indirect=True)


class FakeClock:
    """A clock the test moves by hand: scripts get time from it, so expiry is deterministic."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Backend:
    """The deployment a test runs on: ``name`` is "single" or "cluster"."""

    name: str
    server: LocalRedis | LocalRedisCluster

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.server, LocalRedisCluster)

    def client(self, **kwargs: Any) -> Client:
        """A new client of the deployment (a RedisCluster on the cluster)."""
        return self.server.client(**kwargs)

    def async_client(self) -> AsyncClient:
        """A new redis.asyncio client of the deployment (its RedisCluster on the cluster)."""
        if isinstance(self.server, LocalRedisCluster):
            return redis.asyncio.cluster.RedisCluster.from_url(self.server.url)
        return redis.asyncio.Redis.from_url(self.server.url)


def primaries(client: Client) -> list[redis.Redis]:
    """A plain client per primary: the server itself, or every primary of the cluster (for
    per-node commands such as KEYS, CONFIG and CLIENT LIST, which a cluster client would send
    to a single default node)."""
    if isinstance(client, RedisCluster):
        nodes = client.get_primaries()  # type: ignore[no-untyped-call]
        return [client.get_redis_connection(node) for node in nodes]
    return [client]


def all_keys(client: Client) -> set[bytes | str]:
    """Every key in the deployment, across all primaries."""
    return {key for node in primaries(client) for key in node.keys("*")}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The single server, unless the module parametrizes ``backend`` (see BOTH_BACKENDS)."""
    name = getattr(request, "param", "single")
    server = request.getfixturevalue("redis_cluster" if name == "cluster" else "redis_server")
    return Backend(name, server)


@pytest.fixture
def client(backend: Backend) -> Iterator[Client]:
    conn = backend.client()
    conn.flushall()  # on a cluster: every primary (they are ours)
    yield conn
    conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(client: Client, clock: FakeClock) -> QueueManager:
    return QueueManager(client, clock=clock)
