"""``QueueManager``: the registry of queues, and the entry point for running and watching them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from pyqcore.core import text
from pyqcore.dead_letter import DeadLetterQueue
from pyqcore.definition import sum_counts
from pyqcore.errors import ConfigurationError, UnknownQueueError
from pyqcore.keys import DEFAULT_PREFIX, partitions_key, registry_key, validate_name
from pyqcore.queue import BaseQueue, Handler
from pyqcore.runner import Client, Runner
from pyqcore.settings import Clock
from pyqcore.worker import Worker, WorkerReport, stop_on_signals

Q = TypeVar("Q", bound=type[BaseQueue])


class QueueManager:
    """Creates, holds and runs the queues of one application, all on one Redis client."""

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Clock = time.time,
        max_redrives: int = 3,
    ) -> None:
        self.client = client
        self.prefix = validate_name("prefix", prefix)
        self.clock = clock
        self.runner = Runner(client)
        self._queues: dict[str, BaseQueue] = {}
        self.dead_letter_queue = DeadLetterQueue(self, max_redrives=max_redrives)

    @overload
    def register(self, queue: Q, /, **options: Any) -> Q: ...

    @overload
    def register(
        self, queue: str, /, *, handler: Handler | None = None, **options: Any
    ) -> BaseQueue: ...

    def register(
        self, queue: type[BaseQueue] | str, /, *, handler: Handler | None = None,
        **options: Any,
    ) -> type[BaseQueue] | BaseQueue:
        """Register a BaseQueue subclass (returns the class, so it works as a decorator), or a
        plain handler function under a name (returns the queue). ``options`` override the
        queue's settings (max_retries, visibility_timeout, backoff, serializer, ...)."""
        common: dict[str, Any] = {"prefix": self.prefix, "clock": self.clock, **options}
        if isinstance(queue, type) and issubclass(queue, BaseQueue):
            if handler is not None:
                raise ConfigurationError("pass handler= with a queue name, not with a class")
            instance = queue(self.client, **common)
        elif isinstance(queue, str):
            instance = BaseQueue(self.client, name=queue, handler=handler, **common)
        else:
            raise ConfigurationError(f"register takes a BaseQueue subclass or a name, "
                                     f"got {queue!r}")
        if instance.name in self._queues:
            raise ConfigurationError(f"a queue named {instance.name!r} is already registered")
        self._check_partitions(instance)
        self._queues[instance.name] = instance
        self.client.sadd(registry_key(self.prefix), instance.name)
        return queue if isinstance(queue, type) else instance

    def _check_partitions(self, queue: BaseQueue) -> None:
        """Record a partitioned queue's partition count (so the DLQ and other processes find
        every partition) and refuse a count that differs from the recorded one: jobs would
        be stranded in partitions some processes never read."""
        key = partitions_key(self.prefix)
        if queue.partitions > 1:
            self.client.hsetnx(key, queue.name, queue.partitions)
        recorded = int(self.client.hget(key, queue.name) or 1)
        if recorded != queue.partitions:
            raise ConfigurationError(
                f"queue {queue.name!r} is recorded with partitions={recorded} under prefix "
                f"{self.prefix!r}, not {queue.partitions}; changing it needs a drain first")

    def get_queue(self, name: str) -> BaseQueue:
        """The registered queue called ``name``; UnknownQueueError lists the known names."""
        try:
            return self._queues[name]
        except KeyError:
            known = ", ".join(sorted(self._queues)) or "none"
            raise UnknownQueueError(f"no queue named {name!r} is registered (known: {known})") \
                from None

    @property
    def queues(self) -> Mapping[str, BaseQueue]:
        """The registered queues by name."""
        return dict(self._queues)

    def known_queue_names(self) -> list[str]:
        """Registered queues plus every queue any process registered under this prefix."""
        seen = {text(m) for m in self.client.smembers(registry_key(self.prefix))}
        return sorted(seen | set(self._queues))

    def process_all_queues(
        self,
        *,
        concurrency: int = 1,
        burst: bool = False,
        idle_wait: float = 1.0,
        install_signal_handlers: bool = True,
        stop: threading.Event | None = None,
    ) -> dict[str, WorkerReport]:
        """Run a worker for every registered queue that has a handler, each in its own thread,
        until SIGTERM/SIGINT (or ``stop`` is set, or each is drained in ``burst`` mode)."""
        stop = stop or threading.Event()
        workers = {
            name: Worker(q, concurrency=concurrency, burst=burst, idle_wait=idle_wait, stop=stop)
            for name, q in self._queues.items() if _has_handler(q)
        }
        if not workers:
            raise ConfigurationError("no registered queue has a handler to process jobs with")
        reports: dict[str, WorkerReport] = {}

        def run(name: str, worker: Worker) -> Callable[[], None]:
            return lambda: reports.__setitem__(name, worker.run(install_signal_handlers=False))

        threads = [threading.Thread(target=run(n, w), name=f"pyqcore-worker-{n}")
                   for n, w in workers.items()]
        with stop_on_signals(stop, install_signal_handlers):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return reports

    def monitor_queue_sizes(
        self, *, process_dead_letters: bool = True, max_age: float = 4 * 3600
    ) -> dict[str, dict[str, int]]:
        """Counts per state of every known queue; also runs dead-letter processing (purge
        items older than ``max_age`` seconds, redrive younger ones), as the seed system did."""
        if process_dead_letters:
            self.dead_letter_queue.process_dead_letter_queue(max_age=max_age)
        names = self.known_queue_names()
        parts = {name: self.dead_letter_queue.parts_of(name) for name in names}
        calls = [part.counts() for name in names for part in parts[name]]
        replies = iter(self.runner.run_all(calls) if calls else [])
        return {name: sum_counts(next(replies) for _ in parts[name]) for name in names}


def _has_handler(queue: BaseQueue) -> bool:
    return type(queue).process_job is not BaseQueue.process_job or queue._handler is not None
