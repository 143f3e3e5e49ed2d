"""One clock per queue, tested with real processes whose clocks are off: workers and producers
run under ``faketime`` (libfaketime: the process's own clock 60 s ahead or behind), against a
normal redis-server. Leases, delays and the records' dates follow the server's clock, so a
skewed client changes nothing. Times are checked against the server's ``TIME``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from pyqcore import BaseQueue, Job
from pyqcore.core.calls import text
from tests.reliability.scenario import ROOT, wait_until
from tests.skewed_process import RAN
from tests.support import LocalRedis

pytestmark = pytest.mark.skipif(
    shutil.which("faketime") is None,
    reason="the faketime binary is missing (Debian package faketime; CI installs it)")

SKEWED = [sys.executable, "-m", "tests.skewed_process"]


def faketime_env(offset: str) -> dict[str, str]:
    """The environment ``faketime -f OFFSET`` gives a program (its libfaketime preload), for a
    process started directly: under the ``faketime`` wrapper, a signal would stop the wrapper
    and leave the program running. Only the wall clock is moved, not the monotonic one."""
    out = subprocess.run(["faketime", "-f", offset, "env"], check=True, capture_output=True,
                         text=True).stdout
    given = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {**os.environ, "LD_PRELOAD": given["LD_PRELOAD"], "FAKETIME": given["FAKETIME"],
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def add_skewed(client: redis.Redis, url: str, offset: str, delay: float
               ) -> tuple[int, str, int]:
    """Add a job from a producer process whose clock is at ``offset``: the server's time
    before, the job's id, and the server's time after."""
    before = server_ms(client)
    out = subprocess.run([*SKEWED, "add", url, "skew", str(delay)], cwd=ROOT,
                         env=faketime_env(offset), check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return before, out.strip(), server_ms(client)


@contextmanager
def skewed_worker(url: str, offset: str, visibility_timeout: float) -> Iterator[None]:
    """A worker process whose clock is at ``offset``, stopped (SIGTERM) at the end."""
    worker = subprocess.Popen([*SKEWED, "work", url, "skew", str(visibility_timeout)],
                              cwd=ROOT, env=faketime_env(offset))
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def ran(client: redis.Redis) -> list[str]:
    return [text(job_id) for job_id in client.lrange(RAN, 0, -1)]


def test_libfaketime_moves_a_python_processes_clock() -> None:
    """The premise: CPython under faketime sees its clock 60 s ahead."""
    code = "import time; print(time.time())"
    out = subprocess.run([sys.executable, "-c", code], env=faketime_env("+60s"), check=True,
                         capture_output=True, text=True).stdout
    assert 55 < float(out) - time.time() < 65


def test_a_worker_60_s_ahead_does_not_reclaim_a_live_lease(
        redis_server: LocalRedis, client: redis.Redis) -> None:
    """Run on a worker's clock, its reserve would see the other worker's 10 s lease expired
    50 s ago, reclaim it and run the job first (it goes to the front of ready)."""
    queue = BaseQueue(client, name="skew", visibility_timeout=10.0)
    queue.add("held", job_id="held")
    [held] = queue.reserve()
    with skewed_worker(redis_server.url, "+60s", 10.0):
        queue.add("probe", job_id="probe")  # leased by a reserve that also sweeps expired leases
        wait_until(lambda: "probe" in ran(client), 30, "the skewed worker to run the probe")
        queue.add("probe 2", job_id="probe-2")
        wait_until(lambda: "probe-2" in ran(client), 30, "the skewed worker to run probe 2")
    assert ran(client) == ["probe", "probe-2"]
    assert queue.ack(held) == 1  # the holder's lease was never lost
    assert queue.stats().get("reclaimed", 0) == 0


def test_a_producer_60_s_ahead_gets_a_1_s_delay_of_1_s(
        redis_server: LocalRedis, client: redis.Redis) -> None:
    before, job_id, after = add_skewed(client, redis_server.url, "+60s", 1.0)
    due = client.zscore(BaseQueue(client, name="skew").keys.key("delayed"), job_id)
    assert due is not None and before + 1000 <= due <= after + 1000  # not a minute later
    queue = BaseQueue(client, name="skew")
    found: list[Job] = []

    def leased() -> bool:
        found.extend(queue.reserve())
        return bool(found)

    wait_until(leased, 30, "the delayed job to become ready")
    [job] = found
    assert job.id == job_id and job.payload == "skewed"
    # its record is dated by the server's clock (the producer learned the offset), not its own
    assert before - 1000 <= job.enqueued_at * 1000 <= after + 1000


def test_a_producer_60_s_behind_does_not_make_a_30_s_delay_ready_at_once(
        redis_server: LocalRedis, client: redis.Redis) -> None:
    before, job_id, after = add_skewed(client, redis_server.url, "-60s", 30.0)
    queue = BaseQueue(client, name="skew")
    due = client.zscore(queue.keys.key("delayed"), job_id)
    assert due is not None and before + 30_000 <= due <= after + 30_000
    assert queue.reserve() == []  # still delayed, not ready 60 s early
    assert queue.counts() == {"ready": 0, "delayed": 1, "leased": 0, "dead": 0}


def test_a_worker_60_s_behind_runs_a_delayed_job_when_it_is_due(
        redis_server: LocalRedis, client: redis.Redis) -> None:
    """On its own clock the job would be due a minute later; an idle worker is told how long
    to wait by the server, so it sleeps until the due time, not 60 s past it."""
    queue = BaseQueue(client, name="skew")
    with skewed_worker(redis_server.url, "-60s", 30.0):
        queue.add("soon", delay=2.0, job_id="soon")
        wait_until(lambda: "soon" in ran(client), 30, "the skewed worker to run the job")
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
