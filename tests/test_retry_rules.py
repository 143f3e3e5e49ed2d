"""Retry rules: a job's own ``max_retries`` (kept in meta, honoured by fail and by reserve's
reclaim of an expired lease, kept across a redrive), and a queue's ``retry_on`` / ``dead_on``
exception types; on both drivers, one server and a cluster."""

from __future__ import annotations

import pytest

from pyqcore import Backoff, BaseQueue, ConfigurationError, Job, NonRetryableError, Outcome
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock, all_keys
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def make(api: Api, client: Client, clock: FakeClock, **options: object) -> BaseQueue:
    options.setdefault("backoff", Backoff.fixed(1.0))
    return api.BaseQueue(client, name="rules", clock=clock, **options)  # type: ignore[arg-type]


def fail_once(queue: BaseQueue, clock: FakeClock, error: Exception | None = None) -> Outcome:
    """Lease the one job there is, fail it, and let its backoff pass."""
    [job] = queue.reserve()
    outcome = queue.fail(job, error or RuntimeError("boom"))
    clock.advance(1.0)
    return outcome


def test_a_jobs_own_max_retries_wins_over_the_queues_both_ways(api: Api, client: Client,
                                                               clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5)
    queue.add("fragile", max_retries=0)
    assert fail_once(queue, clock) is Outcome.DEAD  # the queue would allow 5 retries

    strict = api.BaseQueue(client, name="strict", clock=clock, max_retries=0,
                           backoff=Backoff.fixed(1.0))
    strict.add("patient", max_retries=2)
    assert [fail_once(strict, clock) for _ in range(3)] == [
        Outcome.RETRY, Outcome.RETRY, Outcome.DEAD]
    [item] = api.QueueManager(client, clock=clock).dead_letter_queue.items(queue="strict")
    assert (item.attempts, item.redrives) == (3, 0)


def test_an_expired_lease_is_reclaimed_by_the_jobs_own_limit(api: Api, client: Client,
                                                             clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5, visibility_timeout=1.0)
    queue.add("crashes its worker", max_retries=0)
    queue.reserve()
    clock.advance(2.0)
    assert queue.reserve() == []  # reclaimed: its one delivery is spent
    assert queue.counts()["dead"] == 1

    lenient = api.BaseQueue(client, name="lenient", clock=clock, max_retries=0,
                            visibility_timeout=1.0)
    lenient.add("gets a second chance", max_retries=1)
    lenient.reserve()
    clock.advance(2.0)
    [again] = lenient.reserve()
    assert again.attempt == 2
    lenient.ack(again)


def test_a_jobs_own_limit_survives_a_redrive(api: Api, client: Client, clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5)
    queue.add("x", max_retries=0)
    assert fail_once(queue, clock) is Outcome.DEAD
    dlq = api.QueueManager(client, clock=clock).dead_letter_queue
    [item] = dlq.items(queue="rules")
    dlq.reprocess_item(item)
    assert fail_once(queue, clock) is Outcome.DEAD


def test_add_batch_takes_max_retries_for_every_job(api: Api, client: Client,
                                                   clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5)
    queue.add_batch(["a", "b"], max_retries=0)
    for job in queue.reserve(count=2):
        assert queue.fail(job, RuntimeError("x")) is Outcome.DEAD


def test_dead_on_buries_at_once_and_other_errors_retry(api: Api, client: Client,
                                                       clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5, dead_on=(KeyError, PermissionError))
    queue.add("x")
    assert fail_once(queue, clock, ValueError("transient")) is Outcome.RETRY
    assert fail_once(queue, clock, KeyError("missing")) is Outcome.DEAD


def test_retry_on_retries_only_those_errors_and_their_subclasses(api: Api, client: Client,
                                                                 clock: FakeClock) -> None:
    queue = make(api, client, clock, max_retries=5, retry_on=OSError)
    queue.add("x")
    assert fail_once(queue, clock, ConnectionResetError("reset")) is Outcome.RETRY
    assert fail_once(queue, clock, ValueError("a bug")) is Outcome.DEAD


def test_dead_on_wins_over_retry_on_and_non_retryable_wins_over_both(
    api: Api, client: Client, clock: FakeClock,
) -> None:
    queue = make(api, client, clock, max_retries=5, retry_on=(OSError, NonRetryableError),
                 dead_on=FileNotFoundError)
    queue.add_batch(["a", "b"])
    a, b = queue.reserve(count=2)
    assert queue.fail(a, FileNotFoundError("gone")) is Outcome.DEAD
    assert queue.fail(b, NonRetryableError("by hand")) is Outcome.DEAD


def test_a_worker_applies_the_rules_to_what_the_handler_raises(api: Api, client: Client) -> None:
    def handler(job: Job) -> None:
        raise {"bug": ValueError, "flaky": TimeoutError}[job.payload]("x")

    queue = api.BaseQueue(client, name="rules", handler=handler, max_retries=2,
                          backoff=Backoff.fixed(0), retry_on=TimeoutError)
    queue.add_batch(["bug", "flaky"])
    report = queue.process(burst=True)
    assert (report.delivered, report.retried, report.dead) == (4, 2, 2)  # bug: 1, flaky: 3
    items = api.QueueManager(client).dead_letter_queue.items(queue="rules")
    assert sorted((i.payload, i.attempts) for i in items) == [("bug", 1), ("flaky", 3)]


@pytest.mark.parametrize("options", [
    {"retry_on": "ValueError"}, {"retry_on": [ValueError, int]}, {"dead_on": 3},
    {"dead_on": (None,)},
])
def test_bad_retry_rules_are_refused(api: Api, client: Client,
                                     options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match="exception classes"):
        api.BaseQueue(client, name="rules", **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_retries", [-1, 10_001, "3", 2.0, True])
def test_bad_max_retries_on_add_is_refused_before_any_write(
    api: Api, client: Client, clock: FakeClock, max_retries: object,
) -> None:
    queue = make(api, client, clock)
    with pytest.raises(ConfigurationError, match="max_retries"):
        queue.add("x", max_retries=max_retries)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_retries"):
        queue.add_batch(["x"], max_retries=max_retries)  # type: ignore[arg-type]
    assert all_keys(client) == set()
