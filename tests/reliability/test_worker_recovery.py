"""The worker loop's own recovery: a finishing call rides out a Redis outage longer than a
few retries, and an error that is not transient never wedges the worker."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyqcore import BaseQueue, Job, WorkerReport
from pyqcore.core.slot import backoff
from tests.support import LocalRedis


def test_backoff_is_capped_and_never_overflows() -> None:
    assert [backoff(n, cap=2.0) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert backoff(10_000, cap=2.0) == 2.0  # 0.05 * 2**10000 would overflow a float


def test_an_ack_rides_out_a_redis_restart(aof_server: LocalRedis) -> None:
    """The job finishes while redis-server is down for 1.5 s (longer than the old three
    retries): the ack waits for the restart instead of giving the job up to redelivery."""
    client = aof_server.client(retry=Retry(NoBackoff(), 0))  # no retries hiding the outage
    started, finish = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        started.set()
        finish.wait(20)

    queue = BaseQueue(client, name="outage", handler=handler, visibility_timeout=10.0)
    queue.add("x")
    reports: list[WorkerReport] = []
    worker = threading.Thread(target=lambda: reports.append(queue.process(
        max_jobs=1, install_signal_handlers=False)))
    worker.start()
    assert started.wait(10)
    aof_server.stop(kill=True)
    finish.set()  # the ack now fails until the server is back
    time.sleep(1.5)  # the outage itself, not a synchronisation
    aof_server.start()
    worker.join(20)
    assert not worker.is_alive()
    assert reports == [WorkerReport(delivered=1, acked=1)]
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    client.close()


@pytest.mark.inconsistent_state("it clobbers the queue's leased key with a string")
def test_a_non_transient_error_while_finishing_does_not_wedge_the_worker(
    client: redis.Redis,
) -> None:
    """The ack fails with WRONGTYPE (someone clobbered a key): the worker logs it and goes on;
    the job stays leased and is redelivered later. Before, the finisher thread died and the
    worker waited forever for its in-flight job."""
    queue = BaseQueue(client, name="wedge", visibility_timeout=5.0)
    leased = queue.keys.key("leased")

    def handler(job: Job) -> None:
        client.delete(leased)
        client.set(leased, "not a zset")

    queue = BaseQueue(client, name="wedge", handler=handler, visibility_timeout=5.0)
    queue.add("x")
    reports: list[WorkerReport] = []
    worker = threading.Thread(target=lambda: reports.append(queue.process(
        max_jobs=1, install_signal_handlers=False)))
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the worker hung after the finisher's error"
    assert reports == [WorkerReport(delivered=1)]
