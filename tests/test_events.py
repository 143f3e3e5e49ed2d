"""Events (``events=True``: a bounded stream per partition, one entry per transition) and
``queue.result(job_id, timeout=)`` (``store_results``: waits on the terminal events without
polling). On both drivers, one server and a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pyqcore import (
    Backoff,
    BaseQueue,
    ConfigurationError,
    Event,
    JobCancelledError,
    JobDeadError,
    JobNotFoundError,
    PyqcoreError,
    ResultTimeoutError,
)
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, Backend, FakeClock, all_keys, primaries
from tests.support.drivers import Api
from tests.support.waiting import wait_for

pytestmark = BOTH_DRIVERS_AND_BACKENDS
ROOT = Path(__file__).resolve().parent.parent
KEEP: dict[str, Any] = {"keep_completed": 60, "store_results": True}


def lives(events: list[Event]) -> dict[str, list[tuple[str, int]]]:
    """Each job's events, (kind, attempt), in the order read."""
    per: dict[str, list[tuple[str, int]]] = {}
    for event in events:
        per.setdefault(event.job_id, []).append((event.kind, event.attempt))
    return per


def kept_events(queue: BaseQueue) -> list[Event]:
    """Every event the queue's streams keep, read without blocking."""
    return list(queue.events(since=0, block=False))


def blocked_readers(client: Client) -> int:
    """Clients blocked in XREAD on any primary (a result() or an events() waiting)."""
    return sum(c.get("cmd") == "xread" for node in primaries(client) for c in node.client_list())


def in_thread(call: Any, *args: Any, **kwargs: Any) -> Future[Any]:
    """Run ``call`` in a thread; its outcome as a future."""
    done: Future[Any] = Future()

    def run() -> None:
        try:
            done.set_result(call(*args, **kwargs))
        except BaseException as exc:  # handed to the test through the future
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return done


@pytest.mark.parametrize("partitions", [1, 3])
def test_each_jobs_whole_life_is_written_in_order(api: Api, client: Client, clock: FakeClock,
                                                  partitions: int) -> None:
    manager = api.QueueManager(client, clock=clock)
    queue = manager.register("lives", events=True, max_retries=1, partitions=partitions,
                             backoff=Backoff.fixed(1.0))
    retried = queue.add("a", job_id="retried")
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("once"))  # retried after 1 s
    clock.advance(2)
    [job] = queue.reserve()
    assert queue.ack(job) == 1
    dead = queue.add("b", job_id="dead", max_retries=0)
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("for good"))
    dlq = manager.dead_letter_queue
    assert dlq.requeue("lives", ["dead"]) == 1
    [job] = queue.reserve()
    queue.fail(job, RuntimeError("again"))
    assert dlq.purge("lives", ids=["dead"]) == 1
    cancelled = queue.add("c", job_id="cancelled")
    assert queue.cancel(cancelled)
    cleared = queue.add("d", job_id="cleared", delay=60)
    assert queue.clear() == 1
    per_job = lives(kept_events(queue))
    assert per_job == {
        retried: [("added", 0), ("started", 1), ("retried", 1), ("started", 2),
                  ("completed", 2)],
        dead: [("added", 0), ("started", 1), ("dead", 1), ("redriven", 0), ("started", 1),
               ("dead", 1), ("purged", 1)],
        cancelled: [("added", 0), ("cancelled", 0)],
        cleared: [("added", 0), ("cancelled", 0)],
    }


def test_a_job_cancelled_while_running_is_written_as_cancelled_when_its_run_ends(
    api: Api, client: Client, clock: FakeClock
) -> None:
    queue = api.BaseQueue(client, name="stopping", visibility_timeout=10, clock=clock, **KEEP)
    failed, released, expired, completed = queue.add_batch(["a", "b", "c", "d"])
    jobs = queue.reserve(count=4)
    assert queue.cancel_many([failed, released, expired, completed]) == [False] * 4  # marked
    queue.fail(jobs[0], RuntimeError("stopped"))
    queue.release(jobs[1])
    jobs[3].result = "finished anyway"
    queue.ack(jobs[3])
    clock.advance(11)
    queue.reserve(count=0)  # the third one's lease expired: deleted, not retried
    assert lives(kept_events(queue)) == {
        failed: [("cancelled", 1)], released: [("cancelled", 0)], expired: [("cancelled", 1)],
        completed: [("completed", 1)]}
    assert queue.result(completed, timeout=0) == "finished anyway"
    for job_id in (failed, released, expired):  # kept as cancelled (keep_completed): at once
        with pytest.raises(JobCancelledError):
            queue.result(job_id, timeout=0)


def test_a_schedules_run_is_written_as_added(api: Api, client: Client, clock: FakeClock) -> None:
    manager = api.QueueManager(client, clock=clock)
    queue = manager.register("ticks", events=True)
    manager.schedule("tick", "ticks", None, every=60)
    clock.advance(60)
    assert manager.claim_due_schedules().enqueued == 1
    [(kind, job_id)] = [(e.kind, e.job_id) for e in kept_events(queue)]
    assert kind == "added" and job_id.startswith("tick@")


def test_an_expired_lease_is_written_as_retried_then_dead(api: Api, client: Client,
                                                          clock: FakeClock) -> None:
    queue = api.BaseQueue(client, name="expiry", events=True, max_retries=1,
                          visibility_timeout=10, clock=clock)
    job_id = queue.add("x")
    for _ in range(2):
        queue.reserve()
        clock.advance(11)
    queue.reserve(count=0)  # housekeeping: the second lease expired on the last attempt
    assert lives(kept_events(queue))[job_id] == [
        ("added", 0), ("started", 1), ("retried", 1), ("started", 2), ("dead", 2)]


def test_events_carry_time_partition_and_an_entry_id_to_resume_after(
    api: Api, client: Client
) -> None:
    queue = api.BaseQueue(client, name="resume", events=True)
    first, second = queue.add_batch(["a", "b"])
    events = kept_events(queue)
    assert [(e.kind, e.job_id) for e in events] == [("added", first), ("added", second)]
    [server_seconds, _] = primaries(client)[0].time()
    assert all(abs(e.time - server_seconds) < 60 and e.partition == 0 for e in events)
    rest = list(queue.events(since=events[0].entry_id, block=False))
    assert [e.job_id for e in rest] == [second]


@pytest.mark.parametrize("partitions", [1, 3])
def test_events_block_until_the_next_transitions(api: Api, client: Client,
                                                 partitions: int) -> None:
    queue = api.BaseQueue(client, name="follow", events=True, partitions=partitions)
    queue.add("before")  # not read: since=None starts from now
    reader = queue.events(block=30)
    got = in_thread(lambda: [next(reader), next(reader)])
    wait_for(lambda: blocked_readers(client) > 0, what="events() blocking in XREAD")
    ids = [queue.add("one"), queue.add("two")]  # round robin: two partitions of three
    assert sorted((e.kind, e.job_id) for e in got.result(30)) == sorted(
        ("added", i) for i in ids)


def test_events_since_a_time(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="since", events=True)
    queue.add("old")
    [first] = kept_events(queue)
    wait_for(lambda: primaries(client)[0].time()[0] * 1000 > first.time * 1000 + 2,
             what="the server's clock to pass the first event's millisecond")
    new = queue.add("new")
    after = datetime.fromtimestamp(first.time + 0.001, timezone.utc)
    assert [e.job_id for e in queue.events(since=after, block=False)] == [new]
    with pytest.raises(ConfigurationError, match="since="):
        queue.events(since=datetime(2027, 1, 1))  # naive: which zone?


def test_the_stream_stays_bounded(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="bounded", events=True, events_maxlen=100)
    for _ in range(10):
        queue.add_batch(range(100))
    length = client.xlen("pyqcore:{bounded}:events")
    # MAXLEN ~ trims whole nodes (100 entries each by default): between the bound and a node more
    assert 100 <= length <= 200


def test_events_declared_on_a_subclass_keep_the_events_method(api: Api,
                                                               client: Client) -> None:
    class Orders(api.BaseQueue):  # type: ignore[name-defined,misc]
        name = "orders"
        events = True  # the setting hides the method under its name: it is put back

    queue = Orders(client)
    job_id = queue.add("x")
    assert queue.settings.events is True
    events = queue.events(since=0, block=False)  # type: ignore[operator]  # (see the README)
    assert [(e.kind, e.job_id) for e in events] == [("added", job_id)]


def test_a_queue_without_events_writes_no_stream(api: Api, client: Client,
                                                  clock: FakeClock) -> None:
    queue = api.BaseQueue(client, name="quiet", max_retries=0, clock=clock)
    queue.add_batch(range(3))
    jobs = queue.reserve(count=2)
    queue.ack(jobs[0])
    queue.fail(jobs[1], RuntimeError("x"))
    queue.cancel_many(["3"])
    assert not [k for k in all_keys(client) if b"event" in (k if isinstance(k, bytes)
                                                            else k.encode())]
    with pytest.raises(ConfigurationError, match="events=True"):
        queue.events()


def test_store_results_alone_writes_the_terminal_transitions(api: Api, client: Client,
                                                           clock: FakeClock) -> None:
    queue = api.BaseQueue(client, name="terminal", max_retries=0, visibility_timeout=10,
                          clock=clock, **KEEP)
    retried = queue.add("d", max_retries=2)
    done, dead, cancelled = queue.add_batch(["a", "b", "c"])
    again, first, second = queue.reserve(count=3)
    first.result = 1
    queue.ack(first)
    queue.fail(second, RuntimeError("x"))
    queue.cancel(cancelled)
    queue.fail(again, RuntimeError("once"))  # retried: not written at this level
    clock.advance(3600)
    queue.reserve()
    clock.advance(11)
    queue.reserve(count=0)  # its lease expired: retried again, not written either
    assert lives(kept_events(queue)) == {done: [("completed", 1)], dead: [("dead", 1)],
                                         cancelled: [("cancelled", 0)]}
    assert (queue.get_job(retried) or pytest.fail("gone")).attempts == 2


def test_result_waited_from_another_process(api: Api, backend: Backend, client: Client) -> None:
    queue = api.BaseQueue(client, name="answers", **KEEP)
    job_id = queue.add(21)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "tests.result_waiter", backend.server.url, backend.name,
         api.name, "answers", job_id, "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: blocked_readers(client) > 0, timeout=30,
                 what="the other process blocking in result()")
        [job] = queue.reserve()
        job.result = {"double": job.payload * 2}
        assert queue.ack(job) == 1
        out, _ = waiter.communicate(timeout=30)
    finally:
        waiter.kill()
        waiter.wait()
    assert json.loads(out) == {"result": {"double": 42}}


def test_result_waited_in_a_partition_of_a_partitioned_queue(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="parts", partitions=3, **KEEP)
    job_id = queue.add(5, job_id="not-in-partition-0")  # routed by its id
    assert (queue.get_job(job_id) or pytest.fail("gone")).partition != 0
    waited = in_thread(queue.result, job_id, timeout=60)
    wait_for(lambda: blocked_readers(client) > 0, what="result() blocking in XREAD")
    [job] = queue.reserve()
    job.result = job.payload * 2
    queue.ack(job)
    assert waited.result(30) == 10


def test_result_of_a_finished_job_returns_at_once(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="finished", **KEEP)
    job_id = queue.add("x")
    [job] = queue.reserve()
    job.result = ["done"]
    queue.ack(job)
    assert queue.result(job_id, timeout=0) == ["done"]  # no time to wait at all


def test_result_raises_for_a_job_that_died_while_waited_for(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="dying", max_retries=0, **KEEP)
    job_id = queue.add("x")
    waited = in_thread(queue.result, job_id, timeout=60)
    wait_for(lambda: blocked_readers(client) > 0, what="result() blocking in XREAD")
    [job] = queue.reserve()
    queue.fail(job, ValueError("bad input"))
    with pytest.raises(JobDeadError) as died:
        waited.result(30)
    assert (died.value.job_id, died.value.error.type, died.value.error.message) == (
        job_id, "ValueError", "bad input")
    with pytest.raises(JobDeadError):  # and at once, once dead
        queue.result(job_id, timeout=0)


def test_result_raises_for_a_job_cancelled_while_waited_for(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="cancelling", **KEEP)
    job_id = queue.add("x")
    waited = in_thread(queue.result, job_id, timeout=60)
    wait_for(lambda: blocked_readers(client) > 0, what="result() blocking in XREAD")
    queue.add("another")  # an event of another job: skipped, the wait goes on
    assert queue.cancel(job_id)
    with pytest.raises(JobCancelledError):
        waited.result(30)


def test_result_times_out_with_a_typed_error(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="slow", **KEEP)
    job_id = queue.add("x")
    with pytest.raises(ResultTimeoutError) as late:
        queue.result(job_id, timeout=0.2)
    assert isinstance(late.value, TimeoutError) and isinstance(late.value, PyqcoreError)
    assert (queue.get_job(job_id) or pytest.fail("gone")).state == "waiting"


def test_result_of_an_unknown_id_and_without_store_results(api: Api, client: Client) -> None:
    queue = api.BaseQueue(client, name="unknown", **KEEP)
    with pytest.raises(JobNotFoundError):
        queue.result("never-added", timeout=5)
    plain = api.BaseQueue(client, name="plain")
    with pytest.raises(ConfigurationError, match="store_results"):
        plain.result(plain.add("x"))
    with pytest.raises(ConfigurationError):
        queue.result("x", timeout=-1)
