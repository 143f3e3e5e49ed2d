"""QueueManager: registration in its three forms, lookup, running all queues, monitoring; on
the sync and the asyncio driver (``manager``, ``api``), one server and a cluster."""

from __future__ import annotations

import pytest

from pyqcore import ConfigurationError, Job, QueueManager
from pyqcore.errors import UnknownQueueError
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_DRIVERS_AND_BACKENDS, FakeClock
from tests.support.drivers import Api

pytestmark = BOTH_DRIVERS_AND_BACKENDS


def test_register_as_decorator_class_and_handler(api: Api, manager: QueueManager) -> None:
    handled: list[str] = []

    @manager.register
    class Emails(api.BaseQueue):  # type: ignore[name-defined,misc]
        name = "emails"
        max_retries = 5

        def process_job(self, job: Job) -> None:
            handled.append(job.payload)

    assert isinstance(Emails, type)  # the decorator hands the class back
    thumbs = manager.register("thumbnails", handler=lambda job: handled.append(job.payload),
                              max_retries=1)
    emails = manager.get_queue("emails")
    assert isinstance(emails, Emails) and emails.max_retries == 5
    assert manager.get_queue("thumbnails") is thumbs and thumbs.max_retries == 1
    emails.add("e")
    thumbs.add("t")
    reports = manager.process_all_queues(burst=True, install_signal_handlers=False)
    assert sorted(handled) == ["e", "t"]
    assert {name: r.acked for name, r in reports.items()} == {"emails": 1, "thumbnails": 1}


def test_unknown_and_duplicate_names_are_clear_errors(manager: QueueManager) -> None:
    manager.register("a")
    with pytest.raises(UnknownQueueError, match=r"'b'.*known: a"):
        manager.get_queue("b")
    with pytest.raises(ConfigurationError, match="already registered"):
        manager.register("a")
    with pytest.raises(ConfigurationError):
        manager.register(42)  # type: ignore[call-overload]


def test_process_all_queues_needs_a_handler(manager: QueueManager) -> None:
    manager.register("producer-only")
    with pytest.raises(ConfigurationError, match="handler"):
        manager.process_all_queues(burst=True)
    queue = manager.get_queue("producer-only")
    queue.add("x")
    with pytest.raises(ConfigurationError, match="no handler"):
        queue.process_job(queue.reserve()[0])


def test_a_worker_needs_a_handler(api: Api, manager: QueueManager) -> None:
    queue = manager.register("producer-only")
    with pytest.raises(ConfigurationError, match="no handler"):
        api.Worker(queue)


def test_monitor_queue_sizes_processes_the_dead_letters_by_the_age_given(
    manager: QueueManager, clock: FakeClock
) -> None:
    queue = manager.register("q", max_retries=0)
    queue.add_batch(["old", "young"])
    [old] = queue.reserve()
    queue.fail(old, RuntimeError("boom"))
    clock.advance(10)
    [young] = queue.reserve()
    queue.fail(young, RuntimeError("boom"))
    assert manager.monitor_queue_sizes(max_age=5)["q"] == {
        "ready": 1, "delayed": 0, "leased": 0, "dead": 0}  # old purged, young redriven
    assert queue.stats()["purged"] == 1


def test_monitor_queue_sizes_sees_queues_of_other_processes(
    api: Api, client: Client, clock: FakeClock
) -> None:
    elsewhere = api.QueueManager(client, clock=clock)
    elsewhere.register("remote").add_batch(range(3))
    here = api.QueueManager(client, clock=clock)
    here.register("local").add("x", delay=60)
    sizes = here.monitor_queue_sizes()
    assert sizes == {
        "local": {"ready": 0, "delayed": 1, "leased": 0, "dead": 0},
        "remote": {"ready": 3, "delayed": 0, "leased": 0, "dead": 0},
    }
