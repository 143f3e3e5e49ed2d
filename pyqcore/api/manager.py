"""``ManagerApi``: the registry of queues, declared once for the sync and asyncio drivers. It
holds the queues of one application under one prefix, on one client; registering is local
(no I/O, so it works as a decorator on both drivers): a queue announces itself in Redis on its
first call (``QueueCore.announce``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypedDict, TypeVar, overload

from pyqcore.api.dead_letter import DeadLetterApi
from pyqcore.api.operation import operation
from pyqcore.api.queue import QueueApi
from pyqcore.core.dead_letters import DeadLetters
from pyqcore.core.manager import ManagerCore
from pyqcore.core.registry import Registry
from pyqcore.errors import ConfigurationError
from pyqcore.keys import DEFAULT_PREFIX
from pyqcore.testing import ManualClock

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from pyqcore.worker_metrics import WorkerMetrics


class AllWorkerOptions(TypedDict, total=False):
    """How ``process_all_queues`` runs each queue's worker."""

    concurrency: int
    burst: bool
    idle_wait: float
    metrics: bool | WorkerMetrics  # see pyqcore.core.slot.WorkerOptions
    metrics_port: int | None  # one endpoint for all the queues' workers
    metrics_host: str
    schedules: bool  # each worker also enqueues the due runs of its queue's schedules
    give_up_after: float | None


C = TypeVar("C")
Q = TypeVar("Q", bound=QueueApi)
D = TypeVar("D", bound=DeadLetterApi)
QT = TypeVar("QT", bound=type[QueueApi])


class ManagerApi(Generic[C, Q, D]):
    """Creates, holds and runs the queues of one application, all on one Redis client (of
    type C)."""

    driver_class: ClassVar[type[Any]]  # the driver: SyncDriver or AsyncDriver
    queue_class: ClassVar[type[Any]]  # the driver's BaseQueue
    dead_letter_class: ClassVar[type[Any]]  # the driver's DeadLetterQueue
    worker_class: ClassVar[type[Any]]  # the driver's Worker

    def __init__(self, client: C, *, prefix: str = DEFAULT_PREFIX,
                 clock: ManualClock | None = None, max_redrives: int = 3) -> None:
        self.client = client
        self.driver = self.driver_class(client)
        registry = Registry(prefix, clock)  # clock: tests only (the server's otherwise)
        self.clock = registry.clock
        self.prefix = registry.prefix
        self.core = ManagerCore(registry, DeadLetters(registry, max_redrives=max_redrives))
        self.dead_letter_queue: D = self.dead_letter_class(self.driver, self.core.dead_letters)
        self._queues: dict[str, Q] = {}

    @overload
    def register(self, queue: QT, /, **options: Any) -> QT: ...

    @overload
    def register(self, queue: str, /, *, handler: Any = None, **options: Any) -> Q: ...

    def register(self, queue: Any, /, *, handler: Any = None, **options: Any) -> Any:
        """Register a queue class (returns the class, so it works as a decorator), or a plain
        handler function under a name (returns the queue). ``options`` override the queue's
        settings (max_retries, visibility_timeout, backoff, serializer, ...)."""
        common: dict[str, Any] = {"prefix": self.prefix, "clock": self.clock, **options}
        if isinstance(queue, type) and issubclass(queue, self.queue_class):
            if handler is not None:
                raise ConfigurationError("pass handler= with a queue name, not with a class")
            instance = queue(self.client, **common)
        elif isinstance(queue, str):
            instance = self.queue_class(self.client, name=queue, handler=handler, **common)
        else:
            raise ConfigurationError(f"register takes a {self.queue_class.__qualname__} "
                                     f"subclass or a name, got {queue!r}")
        self.core.registry.add(instance.core)
        self._queues[instance.name] = instance
        return queue if isinstance(queue, type) else instance

    def get_queue(self, name: str) -> Q:
        """The registered queue called ``name``; UnknownQueueError lists the known names."""
        try:
            return self._queues[name]
        except KeyError:
            raise self.core.registry.unknown(name) from None

    @property
    def queues(self) -> Mapping[str, Q]:
        """The registered queues by name."""
        return dict(self._queues)

    def workers_for_all(self, stop: Any, **options: Unpack[AllWorkerOptions]) -> dict[str, Any]:
        """A worker (of ``worker_class``) for every registered queue that has a handler, all
        stopped by ``stop``; ConfigurationError if none has one."""
        workers = {name: self.worker_class(q, stop=stop, **options)
                   for name, q in self._queues.items() if q.has_handler}
        if not workers:
            raise ConfigurationError("no registered queue has a handler to process jobs with")
        return workers

    known_queue_names = operation(ManagerCore.known_queue_names)
    workers = operation(ManagerCore.workers)
    server_time = operation(ManagerCore.server_time)
    snapshot = operation(ManagerCore.snapshot)
    monitor_queue_sizes = operation(ManagerCore.monitor_queue_sizes)
    schedule = operation(ManagerCore.schedule)
    unschedule = operation(ManagerCore.unschedule)
    schedules = operation(ManagerCore.schedules)
    claim_due_schedules = operation(ManagerCore.claim_due_schedules)
    run_scheduler = operation(ManagerCore.scheduler_loop)
