"""A worker's own Prometheus metrics (the optional extra ``pyqcore[metrics]``): per queue, how
long handlers run, how long jobs waited from add to their first run, and runs done / failed.
Redis does not know these: the worker measures them around each run (``pyqcore.core.hooks``)
and serves them itself, beside whatever the application registers:

    queue.process(metrics=True)            # recorded in prometheus_client's default registry
    queue.process(metrics_port=9109)       # ... and served on :9109/metrics while it runs
    pyqcore worker myapp.jobs:manager --metrics-port 9109

With ``metrics`` off (the default) this module is never imported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from pyqcore.errors import ConfigurationError
from pyqcore.job import Job

# From a fraction of a millisecond (an empty handler) to an hour (a job delayed that long).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class WorkerMetrics:
    """The worker metrics of one registry (prometheus_client's default one unless given)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.run_seconds = Histogram(
            "pyqcore_worker_job_run_seconds",
            "How long a handler ran on a job (a batch handler's time shared by its jobs).",
            ["queue"], buckets=BUCKETS, registry=registry)
        self.wait_seconds = Histogram(
            "pyqcore_worker_job_wait_seconds",
            "From a job's add to the start of its first run (a delay= it was added with "
            "included).", ["queue"], buckets=BUCKETS, registry=registry)
        self.jobs = Counter("pyqcore_worker_jobs", "Handler runs of jobs by outcome: done "
                            "(returned) or failed (raised).", ["queue", "outcome"],
                            registry=registry)

    def observer(self, queue: str, clock: Callable[[], float]) -> QueueMetrics:
        """The run observer of one queue's worker; ``clock`` is the queue's (wall, seconds)."""
        return QueueMetrics(self, queue, clock)


class QueueMetrics:
    """Observes one queue's runs (a ``pyqcore.core.hooks.RunObserver``), labels bound once."""

    def __init__(self, metrics: WorkerMetrics, queue: str, clock: Callable[[], float],
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self._run = metrics.run_seconds.labels(queue).observe
        self._wait = metrics.wait_seconds.labels(queue).observe
        self._done = metrics.jobs.labels(queue, "done").inc
        self._failed = metrics.jobs.labels(queue, "failed").inc
        self._clock = clock  # wall time, to compare with when a job was added
        self._timer = timer  # for run times

    def start(self, jobs: Sequence[Job]) -> float:
        now = self._clock()
        for job in jobs:
            if job.attempt == 1:  # a retry's wait would be its backoff
                self._wait(max(0.0, now - job.enqueued_at))
        return self._timer()

    def end(self, handle: object, jobs: Sequence[Job],
            failed: Mapping[str, BaseException]) -> None:
        share = (self._timer() - handle) / len(jobs)  # type: ignore[operator]
        failures = sum(job.id in failed for job in jobs) if failed else 0
        for _ in jobs:
            self._run(share)
        if failures:
            self._failed(failures)
        if failures < len(jobs):
            self._done(len(jobs) - failures)


_default: WorkerMetrics | None = None
_lock = threading.Lock()


def default_metrics() -> WorkerMetrics:
    """The process's worker metrics in prometheus_client's default registry (made once)."""
    global _default  # noqa: PLW0603 - a registry accepts each metric name once per process
    with _lock:
        if _default is None:
            _default = WorkerMetrics()
        return _default


_serving: dict[tuple[str, int], list[Any]] = {}  # (host, port) -> [server, thread, users]


@contextmanager
def serving(registry: CollectorRegistry, port: int, host: str) -> Iterator[None]:
    """Serve ``registry`` on http://host:port/metrics while inside. Workers of one process
    (``process_all_queues``) share the endpoint; the last one out stops it."""
    key = (host, port)
    with _lock:
        entry = _serving.get(key)
        if entry is None:
            try:
                server, thread = start_http_server(port, addr=host, registry=registry)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot serve worker metrics on {host}:{port}: {exc}") from exc
            entry = _serving[key] = [server, thread, 0]
        entry[2] += 1
    try:
        yield
    finally:
        with _lock:
            entry[2] -= 1
            if entry[2] == 0:
                del _serving[key]
                entry[0].shutdown()
                entry[0].server_close()
                entry[1].join()
