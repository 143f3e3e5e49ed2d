"""Prometheus metrics over what Redis already holds (the optional extra ``pyqcore[metrics]``,
on ``prometheus_client``): per queue, jobs per state, the counters, the oldest ready job's age;
and the workers alive. Every scrape reads Redis afresh (``manager.snapshot()``, two round trips,
and ``manager.workers()``), so any number of exporters agree and none keeps state.

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(QueueCollector(manager)); start_http_server(9108)

or ``pyqcore metrics --port 9108``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pyqcore.sync.manager import QueueManager

STATES = ("ready", "delayed", "leased", "dead")
COUNTERS = ("added", "completed", "retried", "dead", "redriven", "purged", "reclaimed",
            "orphaned")


class QueueCollector(Collector):
    """Collects every known queue of a (sync) ``QueueManager``'s prefix."""

    def __init__(self, manager: QueueManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        """One scrape: read Redis, yield the metric families (see the module docstring)."""
        snapshot = self.manager.snapshot()
        jobs = GaugeMetricFamily("pyqcore_jobs", "Jobs of a queue in a state, now.",
                                 labels=["queue", "state"])
        oldest = GaugeMetricFamily("pyqcore_oldest_ready_seconds",
                                   "How long the oldest ready job of a queue has waited.",
                                   labels=["queue"])
        counters = {name: CounterMetricFamily(f"pyqcore_jobs_{name}",
                                              f"Jobs {name} since the queue was created.",
                                              labels=["queue"])
                    for name in COUNTERS}
        for queue, view in snapshot.items():
            for state in STATES:
                jobs.add_metric([queue, state], view.counts.get(state, 0))
            oldest.add_metric([queue], view.oldest_ready_age or 0.0)
            for name, family in counters.items():
                family.add_metric([queue], view.stats.get(name, 0))
        workers = GaugeMetricFamily("pyqcore_workers", "Workers alive (beating), by queue.",
                                    labels=["queue"])
        alive: dict[str, int] = {}
        for worker in self.manager.workers():
            for queue in worker.queues:
                alive[queue] = alive.get(queue, 0) + 1
        for queue, count in sorted(alive.items()):
            workers.add_metric([queue], count)
        yield jobs
        yield oldest
        yield from counters.values()
        yield workers
