"""What a worker is apart from how it runs (threads or tasks), shared by the sync and asyncio
``Worker``: its queue, the crew its slots share, its entry in the worker registry, and what
observes its runs (worker metrics, tracing: ``pyqcore.core.hooks``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyqcore.core.effects import Alarm, Flag, Flow
from pyqcore.core.hooks import RunObserver, combined
from pyqcore.core.presence import Presence
from pyqcore.core.queue import QueueCore
from pyqcore.core.registry import Registry
from pyqcore.core.schedules import ScheduleFlows
from pyqcore.core.slot import Crew, WorkerOptions, WorkerReport
from pyqcore.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from typing_extensions import Unpack

    from pyqcore.worker_metrics import WorkerMetrics


class WorkerBase:
    """What a worker is apart from how it runs (threads or tasks): its queue and the crew its
    slots share. ``queue`` is a ``BaseQueue`` of either driver."""

    def __init__(self, queue: Any, *, concurrency: int, stop: Flag, finished: Flag,
                 alarm: Alarm, driver: str, **options: Unpack[WorkerOptions]) -> None:
        if not queue.has_handler:
            raise queue.missing_handler()
        self.queue = queue
        self.core: QueueCore = queue.core
        self.concurrency = concurrency
        self.metrics = worker_metrics(options.get("metrics", False),
                                      options.get("metrics_port"))
        self.metrics_port = options.get("metrics_port")
        self.metrics_host = options.get("metrics_host", "127.0.0.1")
        observers: list[RunObserver] = []
        if self.metrics is not None:
            observers.append(self.metrics.observer(self.core.name, self.core.settings.now))
        if self.core.tracing is not None:
            observers.append(self.core.tracing)
        self.crew = Crew.of(queue.core, batches=queue.handles_batches, stop=stop,
                            finished=finished, alarm=alarm, concurrency=concurrency,
                            longest_block=queue.driver.longest_block(),
                            hooks=combined(observers), **options)
        self.idle_wait = self.crew.idle_wait  # capped below the client's socket timeout
        self.presence = Presence(queue.core, self.crew, driver=driver, slots=concurrency)
        self.schedules = options.get("schedules", False)

    def scheduler_loop(self) -> Flow[None]:
        """The loop of ``schedules=True``: the due runs of this queue's schedules, until the
        worker has finished."""
        registry = Registry(self.core.settings.prefix, self.core.settings.clock)
        registry.add(self.core)
        return ScheduleFlows(registry).scheduler_loop(self.crew.finished, [self.core.name])

    @property
    def report(self) -> WorkerReport:
        """What this worker has done so far."""
        return self.crew.tally.snapshot()

    def outcome(self) -> WorkerReport:
        """What ``run`` returns once every slot has stopped: the report, unless the worker gave
        up (then it raises that error: ``Crew.gives_up``)."""
        self.crew.raise_failure()
        return self.report

    @contextlib.contextmanager
    def serving_metrics(self) -> Iterator[None]:
        """While inside, the worker metrics are served on ``metrics_port`` (if given)."""
        if self.metrics is None or self.metrics_port is None:
            yield
            return
        from pyqcore.worker_metrics import serving  # noqa: PLC0415 - the optional extra

        with serving(self.metrics.registry, self.metrics_port, self.metrics_host):
            yield


def worker_metrics(metrics: Any, port: int | None) -> WorkerMetrics | None:
    """The metrics a worker records into: None when off, the process's default ones for
    ``True`` (or a ``metrics_port``), or the ``WorkerMetrics`` given."""
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise ConfigurationError(f"metrics_port must be an int from 1 to 65535, got {port!r}")
    if metrics is False and port is None:
        return None
    try:
        from pyqcore.worker_metrics import WorkerMetrics, default_metrics  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError("worker metrics need the Prometheus extra: pip install "
                                 "'pyqcore[metrics]'") from exc
    if isinstance(metrics, WorkerMetrics):
        return metrics
    if not isinstance(metrics, bool):
        raise ConfigurationError(f"metrics must be True, False or a WorkerMetrics, got "
                                 f"{metrics!r}")
    return default_metrics()


def may_install_signal_handlers(install: bool) -> bool:
    """Signal handlers can only be installed from the main thread (and only when asked)."""
    return install and threading.current_thread() is threading.main_thread()


def reports_of(outcomes: Mapping[str, WorkerReport | BaseException]) -> dict[str, WorkerReport]:
    """The reports of workers run side by side, by name; if any raised (gave up), the first
    error instead, once all have returned."""
    for outcome in outcomes.values():
        if isinstance(outcome, BaseException):
            raise outcome
    return {name: outcome for name, outcome in outcomes.items()
            if isinstance(outcome, WorkerReport)}
