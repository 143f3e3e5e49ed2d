"""The API over a Sentinel-managed client (redis-py's ``Sentinel(...).master_for(service)``,
``redis.asyncio.sentinel`` on the asyncio driver): adding, processing, retries into the
dead-letter queue and back, an idle worker woken by an add. The deployment is a primary, its
replica and three sentinels (``tests.support.sentinels``), shared by these tests; the failover
test (``test_failover.py``) builds its own."""

from __future__ import annotations

import time

import redis
import redis.asyncio.sentinel
import redis.sentinel

from pyqcore import Backoff, Job, WorkerReport
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS, ON_SENTINEL, Backend
from tests.support.drivers import Api, in_thread
from tests.support.sentinels import LocalSentinelGroup

pytestmark = [BOTH_DRIVERS, ON_SENTINEL]


def test_the_client_is_sentinel_managed(api: Api, client: Client) -> None:
    manager = api.QueueManager(client)
    pool = getattr(manager.client, "connection_pool", None)
    kind = (redis.sentinel.SentinelConnectionPool if api.name == "sync"
            else redis.asyncio.sentinel.SentinelConnectionPool)
    assert isinstance(pool, kind)


def test_added_jobs_are_processed_and_reach_the_replica(api: Api, client: Client,
                                                        backend: Backend) -> None:
    seen: list[int] = []
    manager = api.QueueManager(client)
    queue = manager.register("mail", handler=lambda job: seen.append(job.payload))
    queue.add_batch(range(50))
    queue.add(50, job_id="last")
    assert client.execute_command("WAIT", 1, 5000) == 1  # type: ignore[no-untyped-call]
    group = backend.server
    assert isinstance(group, LocalSentinelGroup)
    replica = next(s for s in group.alive if s is not group.primary()).client()
    try:
        assert replica.hexists(queue.keys.key("jobs"), "last")
    finally:
        replica.close()
    assert queue.counts()["ready"] == 51
    report = queue.process(concurrency=2, burst=True, install_signal_handlers=False)
    assert report == WorkerReport(delivered=51, acked=51)
    assert sorted(seen) == list(range(51))
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_failures_go_to_the_dead_letter_queue_and_are_redriven(api: Api, client: Client
                                                               ) -> None:
    fixed = False

    def handler(job: Job) -> None:
        if not fixed:
            raise ValueError(f"cannot handle {job.payload}")

    manager = api.QueueManager(client)
    queue = manager.register("fragile", handler=handler, max_retries=1,
                             backoff=Backoff.fixed(0))
    queue.add_batch(["a", "b"])
    report = queue.process(burst=True, install_signal_handlers=False)
    assert report == WorkerReport(delivered=4, retried=2, dead=2)
    dlq = manager.dead_letter_queue
    items = dlq.items(queue="fragile")
    assert sorted(item.payload for item in items) == ["a", "b"]
    assert all(item.error is not None and item.error.type == "ValueError"
               and item.attempts == 2 for item in items)
    fixed = True
    dlq.reprocess_item(items[0])
    assert queue.process(burst=True, install_signal_handlers=False).acked == 1
    assert dlq.purge(queue="fragile") == 1
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_blocking_waits_stay_below_the_connections_socket_timeout(api: Api, client: Client
                                                                  ) -> None:
    """``master_for`` passes no socket timeout to its pool unless asked: the connections' own
    default applies (5 s in redis-py 8), and a worker's waits must stay below it."""
    assert isinstance(client, redis.Redis)
    connection = client.connection_pool.get_connection()
    client.connection_pool.release(connection)
    assert connection.socket_timeout
    queue = api.BaseQueue(client, name="w", handler=lambda job: None)
    assert api.Worker(queue, idle_wait=600.0).idle_wait == 0.8 * connection.socket_timeout


def test_an_idle_worker_wakes_on_an_add(api: Api, client: Client) -> None:
    seen: list[str] = []
    queue = api.BaseQueue(client, name="idle", handler=lambda job: seen.append(job.payload))
    worker = api.Worker(queue, idle_wait=30.0)  # only an add wakes it before the deadline
    running = in_thread(worker.run, install_signal_handlers=False)
    try:
        deadline = time.monotonic() + 10
        while not any(c.get("cmd") == "blpop" for c in client.client_list()):
            assert time.monotonic() < deadline, "the worker never blocked on the wake list"
            time.sleep(0.01)
        queue.add("hello")
        while not seen:
            assert time.monotonic() < deadline, "the add did not wake the worker"
            time.sleep(0.01)
    finally:
        worker.stop.set()
    assert running.result(30).acked == 1
    assert seen == ["hello"]
