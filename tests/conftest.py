"""Test fixtures: real Redis deployments started on free ports (never 6379, never a server we
did not start), flushed between tests; and a fake clock for time-driven paths.

The behavioural modules run on two backends: one ``redis-server`` and a local Redis Cluster of
three primaries (both started once per session, the cluster only if a test asks for it). A
module opts in with ``pytestmark = BOTH_BACKENDS``; the ``client`` fixture then hands each test
a ``redis.Redis`` or a ``RedisCluster``. The helpers below read state across every primary, so
an assertion about "the whole database" holds on both.

They also run on both drivers: with ``pytestmark = BOTH_DRIVERS_AND_BACKENDS`` a test that
builds its objects from the ``api`` fixture (``api.BaseQueue(client, ...)``,
``api.QueueManager``, ``api.Worker``, the ``manager`` fixture) runs once on the sync API and
once on ``pyqcore.asyncio``, driven from the test's sync code through a blocking view on an
event loop of its own (``tests.support.drivers``). Assertions about Redis state use ``client``,
the sync client, on both.

Every redis-server and redis-sentinel the session starts (through ``tests.support``) is
registered; one still running when the session ends is killed, and fails the run
(``pytest_sessionfinish``).

After every passing test that used ``client``, the whole database is checked
(``tests.support.invariants.database_problems``: each job in one state, nothing left of a
finished job, counts equal to the keys' sizes, per queue and partition), once everything the
test set up is torn down (workers stopped, event loops closed); a break fails the test at
teardown, naming the stray keys. A test that leaves a queue inconsistent on purpose (it
corrupts or deletes keys) says why with ``@pytest.mark.inconsistent_state("why")``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster

from pyqcore import QueueManager
from pyqcore.asyncio.driver import AsyncClient
from pyqcore.sync.driver import Client
from pyqcore.testing import ManualClock
from tests.reliability.failover import Records
from tests.support import LocalRedis, LocalRedisCluster, reap_leftover_servers
from tests.support.drivers import Api, Harness, asyncio_api, sync_api
from tests.support.invariants import database_problems
from tests.support.invariants import primaries as _primaries
from tests.support.sentinels import LocalSentinelGroup

BACKENDS = ("single", "cluster")
BOTH_BACKENDS = pytest.mark.parametrize("backend", BACKENDS, indirect=True)
DRIVERS = ("sync", "asyncio")
BOTH_DRIVERS = pytest.mark.parametrize("driver", DRIVERS, indirect=True)
BOTH_DRIVERS_AND_BACKENDS = [BOTH_DRIVERS, BOTH_BACKENDS]
ON_SENTINEL = pytest.mark.parametrize("backend", ["sentinel"], indirect=True)


# The clock a test moves by hand (``clock.advance(s)``, passed as ``clock=``): the scripts'
# test-only variant takes the time from it, so expiry is deterministic.
FakeClock = ManualClock


@dataclass(frozen=True)
class Backend:
    """The deployment a test runs on: ``name`` is "single", "cluster" or "sentinel" (a primary
    with a replica, reached through three sentinels: ``tests/sentinel``)."""

    name: str
    server: LocalRedis | LocalRedisCluster | LocalSentinelGroup

    @property
    def is_cluster(self) -> bool:
        return isinstance(self.server, LocalRedisCluster)

    def client(self, **kwargs: Any) -> Client:
        """A new client of the deployment (a RedisCluster on the cluster)."""
        return self.server.client(**kwargs)

    def async_client(self) -> AsyncClient:
        """A new redis.asyncio client of the deployment (its RedisCluster on the cluster, a
        Sentinel-managed one on the Sentinel group)."""
        if isinstance(self.server, LocalRedisCluster):
            return redis.asyncio.cluster.RedisCluster.from_url(self.server.url)
        if isinstance(self.server, LocalSentinelGroup):
            return self.server.async_client()
        return redis.asyncio.Redis.from_url(self.server.url)


primaries = _primaries  # a plain client per primary; tests import it from here too


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


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[LocalSentinelGroup]:
    """A primary, its replica and three sentinels, for the tests that do not kill any."""
    with LocalSentinelGroup() as group:
        yield group


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """The single server, unless the module parametrizes ``backend`` (see BOTH_BACKENDS, and
    ON_SENTINEL)."""
    name = getattr(request, "param", "single")
    fixtures = {"single": "redis_server", "cluster": "redis_cluster",
                "sentinel": "sentinel_group"}
    return Backend(name, request.getfixturevalue(fixtures[name]))


USED_BACKEND = pytest.StashKey[Backend]()  # the deployment a test's ``client`` talked to
FAILED = pytest.StashKey[bool]()  # whether the test itself failed (or was skipped)


@pytest.fixture
def client(backend: Backend, request: pytest.FixtureRequest) -> Iterator[Client]:
    conn = backend.client()
    conn.flushall()  # on a cluster: every primary (they are ours)
    request.node.stash[USED_BACKEND] = backend
    yield conn
    conn.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    report: Any = yield
    if report.when == "call":
        item.stash[FAILED] = not report.passed
    return report  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def checking_clients() -> Iterator[dict[str, Client]]:
    """One client per backend for the database check, kept for the session (a new cluster
    client costs ~20 ms of slot discovery, a few seconds over the suite)."""
    clients: dict[str, Client] = {}
    yield clients
    for conn in clients.values():
        conn.close()


@pytest.fixture(autouse=True)
def invariants_after_the_test(request: pytest.FixtureRequest,
                              checking_clients: dict[str, Client]) -> Iterator[None]:
    """The whole database's invariants after a passing test that used ``client`` (see the
    module docstring). Autouse, so set up first and torn down last: after the test's workers
    and event loops are gone, before the session's servers stop."""
    yield
    node = request.node
    backend = node.stash.get(USED_BACKEND, None)
    if backend is None or node.stash.get(FAILED, True):
        return
    if node.get_closest_marker("inconsistent_state"):
        return
    conn = checking_clients.get(backend.name)
    if conn is None:
        conn = checking_clients[backend.name] = backend.client()
    problems = database_problems(conn)
    if problems:
        pytest.fail(f"{node.nodeid} left the database inconsistent ({backend.name}):\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def patient_client(backend: Backend, client: Client) -> Iterator[Client]:
    """Another client of the test's deployment, whose socket timeout (60 s) lets a worker
    block 30 s on its wake list: a test that a wake-up ends the wait sooner needs it (with the
    default 5 s timeout the worker would look again after 4 s anyway)."""
    conn = backend.client(socket_timeout=60)
    yield conn
    conn.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> str:
    """"sync", unless the module parametrizes ``driver`` (see BOTH_DRIVERS)."""
    name: str = getattr(request, "param", "sync")
    return name


@pytest.fixture
def api(driver: str) -> Iterator[Api]:
    """The driver's ``BaseQueue``, ``QueueManager`` and ``Worker``, called as the sync API is.
    On asyncio: on an event loop of this test's own, closed (what still runs on it cancelled)
    at teardown."""
    if driver == "sync":
        yield sync_api()
        return
    harness = Harness()
    try:
        yield asyncio_api(harness)
    finally:
        harness.close()


@pytest.fixture
def manager(api: Api, client: Client, clock: FakeClock) -> QueueManager:
    """A manager of the test's driver on ``client``, on the fake clock."""
    return api.QueueManager(client, clock=clock)


@pytest.fixture
def pyqcore_log() -> Iterator[Records]:
    """pyqcore's warnings and errors during the test."""
    handler = Records()
    logger = logging.getLogger("pyqcore")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def thread_crashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Exceptions that kill any thread (e.g. a worker's slot thread), as text."""
    crashes: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        crashes.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return crashes


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of what is still set up
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a redis-server (or redis-sentinel) this session started is still running
    (after killing it): a fixture or a test that forgot to stop its server, or a start that
    failed half-way."""
    leftovers = reap_leftover_servers()
    if not leftovers:
        return
    lines = [f"{len(leftovers)} Redis process(es) this session started were still "
             "running at its end (now killed):", *(f"  {what}" for what in leftovers)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "Redis left running", red=True, bold=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
