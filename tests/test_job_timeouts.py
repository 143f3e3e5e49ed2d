"""Timeouts of handler runs (a queue's ``timeout``, a job's own ``add(timeout=...)``): past it
the worker fails the delivery with JobTimeoutError (retried or dead as usual) and extends its
lease no more; an ``async def`` handler is cancelled; a plain handler's thread cannot be: its
slot stays busy until it returns, and what it returns is dropped (never acked). On both
drivers, one server and a cluster."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import cast

import pytest

from pyqcore import Backoff, ConfigurationError, Job, WorkerReport
from pyqcore.serializer import MSGPACK
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, all_keys
from tests.reliability.failover import Records
from tests.support.drivers import Api, in_thread
from tests.support.waiting import wait_for

pytestmark = BOTH_DRIVERS_AND_BACKENDS



@pytest.fixture
def release() -> Iterator[threading.Event]:
    """What a hanging handler waits for; set at teardown too, so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def dead(api: Api, client: Client, name: str) -> list[tuple[object, str, int]]:
    items = api.QueueManager(client).dead_letter_queue.items(queue=name)
    return sorted((i.payload, i.error.type if i.error else "", i.attempts) for i in items)


def test_a_plain_handler_past_its_timeout_fails_and_keeps_its_slot_until_it_returns(
    api: Api, client: Client, release: threading.Event, pyqcore_log: Records,
) -> None:
    runs: list[str] = []

    def handler(job: Job) -> None:
        runs.append(job.payload)
        if job.payload == "hangs":
            release.wait(30)

    # The heartbeat would wake every 100 s: a run's deadline wakes it (the alarm)
    queue = api.BaseQueue(client, name="t", handler=handler, timeout=0.3, max_retries=0,
                          visibility_timeout=300.0)
    queue.add("hangs")
    queue.add("next")
    running = in_thread(queue.process, burst=True, install_signal_handlers=False)
    wait_for(lambda: queue.counts()["dead"] == 1, 20)  # failed at its timeout, while still running
    assert dead(api, client, "t") == [("hangs", "JobTimeoutError", 1)]
    assert runs == ["hangs"]  # its thread holds the one slot: "next" waits
    assert queue.counts() == {"ready": 1, "delayed": 0, "leased": 0, "dead": 1}
    release.set()
    report = running.result(30)
    assert report == WorkerReport(delivered=2, acked=1, dead=1, timed_out=1)
    assert runs == ["hangs", "next"]
    assert queue.stats()["completed"] == 1  # the late return was not acked
    assert any("after its timeout" in r.getMessage() for r in pyqcore_log.records)


def test_an_async_handler_past_its_timeout_is_cancelled_and_retried(api: Api,
                                                                    client: Client) -> None:
    cancelled = threading.Event()

    async def handler(job: Job) -> None:
        if job.payload == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    queue = api.BaseQueue(client, name="t", handler=handler, timeout=0.3, max_retries=1,
                          backoff=Backoff.fixed(0))
    queue.add_batch(["slow", "fast"])
    report = queue.process(burst=True)
    assert cancelled.is_set()
    assert report == WorkerReport(delivered=3, acked=1, retried=1, dead=1, timed_out=2)
    assert dead(api, client, "t") == [("slow", "JobTimeoutError", 2)]


def test_a_jobs_own_timeout_wins_over_the_queues(api: Api, client: Client,
                                                 release: threading.Event) -> None:
    seen: dict[str, float | None] = {}

    def handler(job: Job) -> None:
        seen[job.payload] = job.timeout
        release.wait(0.6 if job.payload == "patient" else 30)  # 0.6 s of work: past 0.2 s

    queue = api.BaseQueue(client, name="t", handler=handler, timeout=0.2, max_retries=0)
    queue.add("patient", timeout=60.0)
    queue.add("hasty", timeout=0.3)
    running = in_thread(queue.process, burst=True, install_signal_handlers=False)
    wait_for(lambda: queue.counts()["dead"] == 1, 20)
    release.set()
    assert running.result(30).acked == 1
    assert seen == {"patient": 60.0, "hasty": 0.3}
    assert dead(api, client, "t") == [("hasty", "JobTimeoutError", 1)]


def test_a_batch_handler_past_its_timeout_fails_its_whole_batch(
    api: Api, client: Client, release: threading.Event,
) -> None:
    def hangs(jobs: list[Job]) -> None:
        release.wait(30)

    queue = api.BaseQueue(client, name="t", batch_handler=hangs, timeout=0.3, max_retries=0)
    queue.add("x")
    running = in_thread(queue.process, burst=True, install_signal_handlers=False)
    wait_for(lambda: queue.counts()["dead"] == 1, 20)
    release.set()
    assert running.result(30) == WorkerReport(delivered=1, dead=1, timed_out=1)


def test_a_jobs_own_timeout_is_kept_in_its_record(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="t", timeout=5.0)
    own = queue.add("own", timeout=1.5)
    plain = queue.add("plain")
    jobs_key = "pyqcore:{t}:jobs"
    assert MSGPACK.loads(cast(bytes, client.hget(jobs_key, own)))[3] == 1500
    assert len(MSGPACK.loads(cast(bytes, client.hget(jobs_key, plain)))) == 3  # no more
    assert {j.payload: j.timeout for j in queue.reserve(count=2)} == {"own": 1.5, "plain": 5.0}


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "1", True,
                                     8 * 24 * 3600.0])
def test_a_bad_timeout_is_refused_before_any_write(api: Api, client: Client,
                                                   timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        api.BaseQueue(client, name="t", timeout=timeout)  # type: ignore[arg-type]
    queue = api.BaseQueue(client, name="t")
    with pytest.raises(ConfigurationError, match="timeout"):
        queue.add("x", timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="timeout"):
        queue.add_batch(["x"], timeout=timeout)  # type: ignore[arg-type]
    assert all_keys(client) == set()
