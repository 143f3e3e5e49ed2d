"""The worker's own Prometheus metrics (``pyqcore.worker_metrics``): run time, wait from add to
first run, and runs done / failed per queue, recorded by both drivers' workers (one handler at
a time and batch handlers), served on ``metrics_port`` while a worker runs; and nothing of it
(not even the import) when metrics are off."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pyqcore import Backoff, ConfigurationError, Job, NonRetryableError
from pyqcore.sync.driver import Client
from pyqcore.worker_metrics import QueueMetrics, WorkerMetrics
from tests.conftest import BOTH_DRIVERS, FakeClock
from tests.support import LocalRedis, free_port
from tests.support.drivers import Api, in_thread

ROOT = Path(__file__).resolve().parent.parent


class Sampled:
    """The samples of one queue's worker metrics in a registry."""

    def __init__(self, registry: CollectorRegistry, queue: str) -> None:
        self.registry = registry
        self.queue = queue

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, {"queue": self.queue, **labels})
        return 0.0 if value is None else value


@BOTH_DRIVERS
def test_runs_waits_and_outcomes_are_recorded_per_queue(api: Api, client: Client,
                                                        clock: FakeClock) -> None:
    def handle(job: Job) -> None:
        if job.payload == "slow":
            time.sleep(0.03)  # a run the histogram must see as at least 30 ms
        if job.payload == "flaky" and job.attempt == 1:
            raise ValueError("once")
        if job.payload == "poison":
            raise NonRetryableError("never")

    metrics = WorkerMetrics(CollectorRegistry())
    queue = api.BaseQueue(client, name="mail", handler=handle, clock=clock,
                          backoff=Backoff.fixed(0))
    other = api.BaseQueue(client, name="other", handler=handle, clock=clock)
    queue.add_batch(["slow", "flaky", "poison", "fine"])
    clock.advance(5.0)  # every job waits exactly 5 s for its first run
    report = queue.process(burst=True, metrics=metrics)
    assert report.acked == 3 and report.dead == 1
    value = Sampled(metrics.registry, "mail")
    assert value("pyqcore_worker_job_wait_seconds_count") == 4  # the retry is not a wait
    assert value("pyqcore_worker_job_wait_seconds_sum") == pytest.approx(20.0)
    assert value("pyqcore_worker_job_wait_seconds_bucket", le="5.0") == 4
    assert value("pyqcore_worker_job_wait_seconds_bucket", le="2.5") == 0
    assert value("pyqcore_worker_job_run_seconds_count") == 5  # flaky ran twice
    assert value("pyqcore_worker_job_run_seconds_sum") >= 0.03
    assert value("pyqcore_worker_job_run_seconds_bucket", le="0.025") <= 4  # not the slow one
    assert value("pyqcore_worker_jobs_total", outcome="done") == 3
    assert value("pyqcore_worker_jobs_total", outcome="failed") == 2
    other.add("x")
    other.process(burst=True, metrics=metrics)
    assert Sampled(metrics.registry, "other")("pyqcore_worker_jobs_total", outcome="done") == 1
    assert value("pyqcore_worker_jobs_total", outcome="done") == 3  # per queue


@BOTH_DRIVERS
def test_a_batch_handler_shares_its_time_among_its_jobs(api: Api, client: Client,
                                                        clock: FakeClock) -> None:
    def handle(jobs: list[Job]) -> Mapping[str, BaseException]:
        time.sleep(0.04)
        return {job.id: NonRetryableError("odd") for job in jobs if job.payload % 2}

    metrics = WorkerMetrics(CollectorRegistry())
    queue = api.BaseQueue(client, name="batch", batch_handler=handle, clock=clock)
    queue.add_batch(range(4))
    clock.advance(2.0)
    queue.process(burst=True, prefetch=4, metrics=metrics)
    value = Sampled(metrics.registry, "batch")
    assert value("pyqcore_worker_jobs_total", outcome="done") == 2
    assert value("pyqcore_worker_jobs_total", outcome="failed") == 2
    assert value("pyqcore_worker_job_wait_seconds_sum") == pytest.approx(8.0)
    assert value("pyqcore_worker_job_run_seconds_count") == 4
    assert value("pyqcore_worker_job_run_seconds_sum") >= 0.04  # at least one batch's time


def test_a_batch_s_time_is_shared_by_its_jobs_and_only_first_runs_wait(clock: FakeClock
                                                                       ) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    timer = FakeClock(100.0)  # the run timer (perf_counter in production)
    observer = QueueMetrics(metrics, "q", lambda: clock.now, timer=lambda: timer.now)
    jobs = [Job(str(i), "q", None, None, attempt, clock.now - 3.0, "t", 0.0)
            for i, attempt in enumerate((1, 1, 2, 1))]
    handle = observer.start(jobs)
    timer.advance(0.4)
    observer.end(handle, jobs, {"2": ValueError("x"), "elsewhere": ValueError("y")})
    value = Sampled(metrics.registry, "q")
    assert value("pyqcore_worker_job_run_seconds_count") == 4
    assert value("pyqcore_worker_job_run_seconds_sum") == pytest.approx(0.4)
    assert value("pyqcore_worker_job_run_seconds_bucket", le="0.05") == 0  # 0.1 s each
    assert value("pyqcore_worker_job_run_seconds_bucket", le="0.25") == 4
    assert value("pyqcore_worker_job_wait_seconds_count") == 3  # not the second attempt
    assert value("pyqcore_worker_job_wait_seconds_sum") == pytest.approx(9.0)
    assert value("pyqcore_worker_jobs_total", outcome="failed") == 1  # ids of other batches
    assert value("pyqcore_worker_jobs_total", outcome="done") == 3


@BOTH_DRIVERS
def test_metrics_port_serves_them_while_the_worker_runs(api: Api, client: Client) -> None:
    started, release = threading.Event(), threading.Event()

    def handle(job: Job) -> None:
        started.set()
        assert release.wait(30)

    queue = api.BaseQueue(client, name=f"served-{api.name}", handler=handle)
    queue.add("x")
    port = free_port()
    running = in_thread(queue.process, burst=True, metrics_port=port)
    assert started.wait(30)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    # Served from prometheus_client's default registry, the application's metrics with them.
    assert f'pyqcore_worker_job_wait_seconds_count{{queue="served-{api.name}"}} 1.0' in body
    assert "python_info" in body
    release.set()
    assert running.result(30).acked == 1
    with pytest.raises(OSError):  # the endpoint stopped with the worker
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_bad_metrics_options_are_refused(client: Client) -> None:
    from pyqcore import BaseQueue  # noqa: PLC0415

    queue = BaseQueue(client, name="q", handler=print)
    for options in ({"metrics": "yes"}, {"metrics_port": 0}, {"metrics_port": 70000},
                    {"metrics_port": True}):
        with pytest.raises(ConfigurationError, match="metrics"):
            queue.process(burst=True, **options)
    queue.add("x")
    with socket_bound() as port, pytest.raises(ConfigurationError, match=f":{port}"):
        queue.process(burst=True, metrics_port=port)
    assert queue.counts()["ready"] == 1  # refused before any job was taken


class socket_bound:
    """A port some other socket listens on, while inside."""

    def __enter__(self) -> int:
        import socket  # noqa: PLC0415

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        port: int = self.sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


OFF = """
import sys
import redis
from pyqcore import BaseQueue
seen = []
queue = BaseQueue(redis.Redis.from_url(sys.argv[1]), name="off", handler=seen.append)
queue.add("x")
from pyqcore import Worker
worker = Worker(queue, burst=True)
assert worker.crew.hooks is None
worker.run()
assert len(seen) == 1
# (redis-py imports opentelemetry itself when it is installed; pyqcore's tracing is not.)
for name in ("prometheus_client", "pyqcore.worker_metrics", "pyqcore.tracing"):
    assert name not in sys.modules, name
for name in ("prometheus_client", "opentelemetry"):
    sys.modules[name] = None  # as if the extras were not installed: importing raises
for attempt in (lambda: Worker(queue, metrics=True),
                lambda: BaseQueue(queue.client, name="t", tracing=True)):
    try:
        attempt()
    except Exception as exc:
        print(type(exc).__name__, exc)
"""


def test_with_metrics_and_tracing_off_their_libraries_are_never_imported(
        redis_server: LocalRedis, client: Client) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", OFF, redis_server.url], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ConfigurationError worker metrics need the Prometheus extra: pip install "
        "'pyqcore[metrics]'",
        "ConfigurationError tracing=True needs the OpenTelemetry extra: pip install "
        "'pyqcore[otel]'",
    ]


def test_the_worker_command_serves_metrics_per_process(redis_server: LocalRedis,
                                                       client: Client) -> None:
    from pyqcore import BaseQueue  # noqa: PLC0415

    BaseQueue(client, name="mail").add_batch(range(3))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYQCORE_CLI_TEST_URL": redis_server.url}
    worker = subprocess.Popen([sys.executable, "-m", "pyqcore", "worker", "tests.test_cli:app",
                               "--queue", "mail", "-c", "1", "--metrics-port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        body = scrape_until(worker, port, 'pyqcore_worker_jobs_total{outcome="done",'
                                          'queue="mail"} 3.0')
        assert 'pyqcore_worker_job_run_seconds_count{queue="mail"} 3.0' in body
    finally:
        worker.terminate()
        assert worker.wait(30) == 0, worker.communicate()


def scrape_until(process: subprocess.Popen[Any], port: int, wanted: str) -> str:
    """The metrics page of ``port`` once it shows ``wanted`` (the process still running)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                body: str = r.read().decode()
            if wanted in body:
                return body
        except OSError:
            pass
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {wanted!r} on :{port} in time"
        time.sleep(0.05)


def test_the_workers_of_one_process_share_one_endpoint_until_the_last_stops(
        client: Client) -> None:
    from pyqcore import QueueManager  # noqa: PLC0415

    started, release = threading.Event(), threading.Event()

    def slow(job: Job) -> None:
        started.set()
        assert release.wait(30)

    manager = QueueManager(client)
    manager.register("slow", handler=slow).add("x")
    manager.register("quick", handler=lambda job: None).add_batch(range(3))
    port = free_port()
    running = in_thread(manager.process_all_queues, burst=True, metrics_port=port,
                        install_signal_handlers=False)

    def page() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            body: str = r.read().decode()
        return body

    assert started.wait(30)
    deadline = time.monotonic() + 30
    while any(t.name == "pyqcore-worker-quick" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the drained queue's worker did not stop"
        time.sleep(0.05)
    body = page()  # still served: the "slow" queue's worker runs on
    assert 'pyqcore_worker_jobs_total{outcome="done",queue="quick"} 3.0' in body
    assert 'pyqcore_worker_job_wait_seconds_count{queue="slow"} 1.0' in body
    assert not running.done()
    release.set()
    assert running.result(30)["slow"].acked == 1
    with pytest.raises(OSError):
        page()
