"""Bounded waits against a Redis that is down, hung or refusing the credentials, on both
drivers: every one-shot call raises a typed pyqcore error (``RedisUnavailableError``,
``RedisAuthenticationError``, with redis-py's error as the cause) within its documented bound
(the client's own timeouts and retries: pyqcore adds no retry of its own); ``process(burst=True)``
gives up after ``give_up_after`` seconds of failing round trips and raises the same, yet rides
out a shorter outage; a long-running worker keeps retrying, and its stop still ends it. The
bounds are checked with generous slack (the machine may be loaded): they catch a wait that
never ends, not a slow one."""

from __future__ import annotations

import concurrent.futures
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from pyqcore import Job, RedisAuthenticationError, RedisUnavailableError
from tests.conftest import BOTH_DRIVERS
from tests.reliability.failover import Records
from tests.support import LocalRedis
from tests.support.drivers import Api, in_thread

pytestmark = BOTH_DRIVERS

SLACK = 10.0  # seconds allowed past a documented bound, for a loaded machine
TIMEOUT = 0.5  # the clients' socket (and connect) timeout


@pytest.fixture
def server() -> Iterator[LocalRedis]:
    """A server of this test's own (it stops it), keeping its data over a restart."""
    with LocalRedis("--appendonly", "yes", "--appendfsync", "always") as started:
        yield started


def client_of(server: LocalRedis, **options: Any) -> redis.Redis:
    """A client as ``Redis.from_url`` makes it: no retries of its own, TIMEOUT timeouts."""
    return redis.Redis.from_url(server.url, socket_timeout=TIMEOUT,
                                socket_connect_timeout=TIMEOUT, **options)


def raised_within(bound: float, call: Callable[[], object]) -> BaseException:
    """What ``call`` raised, which it must within ``bound`` + SLACK seconds (run in a thread,
    so a wait that never ends fails the test instead of hanging it)."""
    outcome = in_thread(call)
    try:
        result = outcome.result(timeout=bound + SLACK)
    except concurrent.futures.TimeoutError:
        pytest.fail(f"still waiting after {bound + SLACK} s (the bound is {bound} s)")
    except Exception as exc:
        return exc
    pytest.fail(f"returned {result!r} instead of raising")


def test_one_shot_calls_against_a_stopped_server_raise_redis_unavailable(
    api: Api, server: LocalRedis,
) -> None:
    manager = api.QueueManager(client_of(server))
    queue = manager.register("mail", handler=lambda job: None)
    queue.add("before")
    dlq = manager.dead_letter_queue
    server.stop()
    calls: dict[str, Callable[[], object]] = {
        "add": lambda: queue.add("x"), "add_batch": lambda: queue.add_batch(["x", "y"]),
        "counts": queue.counts, "stats": queue.stats, "reserve": queue.reserve,
        "dlq.items": dlq.items, "dlq.count": dlq.count,
        "dlq.purge": lambda: dlq.purge(queue="mail"),
        "process_dead_letter_queue": dlq.process_dead_letter_queue,
        "monitor_queue_sizes": manager.monitor_queue_sizes, "workers": manager.workers,
    }
    for name, call in calls.items():
        error = raised_within(2 * TIMEOUT, call)  # a connect attempt, no retries
        assert isinstance(error, RedisUnavailableError), (name, error)
        assert isinstance(error.__cause__, redis.ConnectionError), name
        assert str(error.__cause__) in str(error), name  # refused, or closed by the server
    error = raised_within(1.0 + 2 * TIMEOUT,  # give_up_after, then at most one call
                          lambda: queue.process(burst=True, give_up_after=1.0,
                                                install_signal_handlers=False))
    assert isinstance(error, RedisUnavailableError) and "Error 111" in str(error)  # refused
    error = raised_within(1.0 + 2 * TIMEOUT, lambda: manager.process_all_queues(
        burst=True, give_up_after=1.0, install_signal_handlers=False))
    assert isinstance(error, RedisUnavailableError)


def test_a_hung_server_times_out_each_call_within_its_socket_timeout(
    api: Api, server: LocalRedis,
) -> None:
    queue = api.BaseQueue(client_of(server), name="mail", handler=lambda job: None)
    queue.add("before")
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        for call in (lambda: queue.add("x"), queue.counts):
            error = raised_within(TIMEOUT, call)
            assert isinstance(error, RedisUnavailableError), error
            assert isinstance(error.__cause__, redis.TimeoutError)
        error = raised_within(1.0 + TIMEOUT, lambda: queue.process(
            burst=True, give_up_after=1.0, install_signal_handlers=False))
        assert isinstance(error, RedisUnavailableError)
    finally:
        server.process.send_signal(signal.SIGCONT)
    # Frozen, not gone: the calls that timed out were waiting in their sockets, and run now.
    # So did the add (a timed-out call may have run), and the burst's reserves lease its jobs.
    counts = queue.counts()
    assert counts["ready"] + counts["leased"] == 2


def test_burst_rides_out_an_outage_shorter_than_give_up_after(api: Api, server: LocalRedis
                                                             ) -> None:
    seen: list[int] = []
    queue = api.BaseQueue(client_of(server), name="mail",
                          handler=lambda job: seen.append(job.payload))
    queue.add_batch(range(20))
    server.stop()
    restart = threading.Timer(0.5, server.start)  # the append-only file brings the jobs back
    restart.start()
    try:
        report = queue.process(burst=True, give_up_after=60.0, install_signal_handlers=False)
    finally:
        restart.join()
    assert report.acked == 20 and sorted(seen) == list(range(20))
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


def test_a_long_running_worker_keeps_retrying_and_its_stop_still_works(
    api: Api, server: LocalRedis, pyqcore_log: Records,
) -> None:
    running = threading.Event()
    resume = threading.Event()

    def handler(job: Job) -> None:
        running.set()
        resume.wait(30)  # Redis goes down while the job runs: its ack cannot be sent

    queue = api.BaseQueue(client_of(server), name="mail", handler=handler,
                          visibility_timeout=2.0)
    queue.add("slow")
    worker = api.Worker(queue, idle_wait=0.2)
    done = in_thread(worker.run, install_signal_handlers=False)
    assert running.wait(30)
    server.stop()
    resume.set()

    def retrying() -> bool:
        return sum("retrying" in r.getMessage() for r in pyqcore_log.records) >= 3

    deadline = time.monotonic() + 30
    while not retrying():  # the worker rides the outage out, logging as it goes
        assert time.monotonic() < deadline and not done.done(), "the worker did not retry"
        time.sleep(0.02)
    assert not done.done()  # no give_up_after: it would go on for ever
    worker.stop.set()
    report = done.result(timeout=2.0 + SLACK)  # gives its ack up after a visibility timeout
    assert report.delivered == 1 and report.acked == 0
    assert any(r.levelno == logging.WARNING and "retrying" in r.getMessage()
               for r in pyqcore_log.records)


@pytest.fixture
def guarded() -> Iterator[LocalRedis]:
    """A server that requires a password."""
    with LocalRedis(password="right") as started:
        yield started


@pytest.mark.parametrize("password", ["wrong", None])
def test_refused_credentials_raise_redis_authentication_error(
    api: Api, guarded: LocalRedis, password: str | None,
) -> None:
    queue = api.BaseQueue(client_of(guarded, password=password), name="mail",
                          handler=lambda job: None)
    for call in (lambda: queue.add("x"), queue.counts):
        error = raised_within(TIMEOUT, call)
        assert isinstance(error, RedisAuthenticationError), error
        assert isinstance(error.__cause__, redis.AuthenticationError)
    error = raised_within(0.5 + TIMEOUT, lambda: queue.process(
        burst=True, give_up_after=0.5, install_signal_handlers=False))
    assert isinstance(error, RedisAuthenticationError)
    right = api.BaseQueue(client_of(guarded, password="right"), name="mail")
    assert right.counts()["ready"] == 0  # nothing was written with the refused client
