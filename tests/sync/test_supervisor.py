"""The multi-process supervisor (``pyqcore worker APP --processes N``) with real worker
processes and a real redis-server: draining, restarting a killed child, a graceful stop, and
no process left behind.

Every process a test starts carries a token of that test in its environment; the
``leftovers`` fixture finds them all by it at teardown (running or orphaned), kills them, and
fails the test if there were any.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pyqcore import ConfigurationError, Job, QueueManager
from pyqcore.core.calls import text
from pyqcore.sync.supervisor import Supervisor, default_concurrency, run_processes
from tests.support import LocalRedis, free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.sync.test_supervisor:manager"
TOKEN_VARIABLE = "PYQCORE_SUPERVISOR_TEST_TOKEN"

# The app the children run: one queue on the server named by PYQCORE_SUPERVISOR_TEST_URL.
# A job's payload says how long it takes; each child counts its jobs by pid in test:by_pid.
app_client = redis.Redis.from_url(os.environ.get("PYQCORE_SUPERVISOR_TEST_URL",
                                                 "redis://127.0.0.1:1/0"))
manager = QueueManager(app_client)


def work(job: Job) -> None:
    app_client.hincrby("test:by_pid", str(os.getpid()), 1)
    if job.payload.get("slow"):
        app_client.rpush("test:started", job.id)
        time.sleep(job.payload["slow"])
        app_client.rpush("test:finished", job.id)
    else:
        time.sleep(job.payload.get("sleep", 0.0))


manager.register("work", handler=work, visibility_timeout=2.0)


# -- processes ------------------------------------------------------------------------------


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or not ours
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def tagged(token: str) -> list[int]:
    """Every live process whose environment carries ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and \
                environ_of(int(entry.name)).get(TOKEN_VARIABLE) == token and \
                alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def children_of(pid: int, token: str) -> list[int]:
    return sorted(p for p in tagged(token) if parent_of(p) == pid)



@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch, redis_server: LocalRedis,
          client: redis.Redis) -> Iterator[str]:
    """This test's token, in the environment every process it starts inherits (with the
    server's URL and the repository on PYTHONPATH); at teardown, kill whatever carries it
    and fail if anything did."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(TOKEN_VARIABLE, value)
    monkeypatch.setenv("PYQCORE_SUPERVISOR_TEST_URL", redis_server.url)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    yield value
    leftovers = tagged(value)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    if leftovers:
        pytest.fail(f"processes left running at the end of the test (now killed): {leftovers}")


class Supervised:
    """A ``pyqcore worker APP --processes N`` subprocess of a test; its output goes to a file
    (children inherit it: a pipe would keep a reader waiting for as long as any lives)."""

    def __init__(self, token: str, log: Path) -> None:
        self.token = token
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, processes: int, *options: str) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyqcore", "worker", APP, "--processes",
                 str(processes), "--concurrency", "1", *options],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # a process group of its own, as in a terminal
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        return children_of(self.pid, self.token)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The supervisor's exit status, once it has exited."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def supervised(token: str, tmp_path: Path) -> Iterator[Supervised]:
    """A supervisor subprocess to start; killed at teardown if still running (then the
    ``token`` fixture finds any child left)."""
    started = Supervised(token, tmp_path / "supervisor.log")
    yield started
    if started.proc is not None and started.proc.poll() is None:
        started.proc.kill()
        started.proc.wait()


# -- tests ----------------------------------------------------------------------------------


def test_two_processes_drain_a_queue(token: str, client: redis.Redis,
                                     redis_server: LocalRedis) -> None:
    queue = QueueManager(client).register("work")
    queue.add_batch([{"sleep": 0.01}] * 200)
    # Should the run hang, a SIGTERM (to this process: the supervisor) stops it gracefully.
    guard = threading.Timer(60, os.kill, (os.getpid(), signal.SIGTERM))
    guard.start()
    try:
        status = run_processes(APP, 2, burst=True, concurrency=1)
    finally:
        guard.cancel()
    assert status == 0
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    assert queue.stats()["completed"] == 200
    by_pid = {int(k): int(v) for k, v in client.hgetall("test:by_pid").items()}
    assert len(by_pid) == 2 and sum(by_pid.values()) == 200  # both processes worked
    assert os.getpid() not in by_pid


def test_a_killed_child_is_restarted_and_the_queue_still_drains(
        supervised: Supervised, client: redis.Redis) -> None:
    queue = QueueManager(client).register("work")
    queue.add_batch([{"sleep": 0.02}] * 400)
    supervised.start(2)
    wait_for(lambda: len(supervised.children()) == 2, 20, "two workers")
    first = supervised.children()
    wait_for(lambda: client.hlen("test:by_pid") == 2, 20, "both workers at work")
    os.kill(first[0], signal.SIGKILL)
    wait_for(lambda: len(now := supervised.children()) == 2 and first[0] not in now, 20,
             "a new worker")
    assert first[1] in supervised.children()  # the other one ran on
    # The killed child's leases come back after the visibility timeout (2 s).
    wait_for(lambda: queue.stats().get("completed", 0) == 400, 60, "the queue drained")
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    supervised.signal(signal.SIGTERM)
    status, err = supervised.wait(), supervised.output
    assert status == 0, err
    assert "died (killed by SIGKILL); restarting in 0.5 s" in err
    assert client.hlen("test:by_pid") == 3  # two first workers, one restarted
    assert "Traceback" not in err


def test_sigterm_lets_every_child_finish_its_jobs_and_exits_0(
        supervised: Supervised, client: redis.Redis) -> None:
    queue = QueueManager(client).register("work")
    queue.add_batch([{"slow": 1.0}] * 10)
    supervised.start(2)
    wait_for(lambda: client.llen("test:started") >= 2, 20, "two jobs in flight")
    children = supervised.children()
    assert len(children) == 2
    supervised.signal(signal.SIGTERM)
    status, err = supervised.wait(), supervised.output
    assert status == 0, err
    assert not any(alive(pid) for pid in children)
    started = [text(j) for j in client.lrange("test:started", 0, -1)]
    finished = [text(j) for j in client.lrange("test:finished", 0, -1)]
    assert sorted(started) == sorted(finished) and len(finished) >= 2  # none cut short
    assert queue.counts() == {"ready": 10 - len(finished), "delayed": 0, "leased": 0,
                              "dead": 0}  # the rest went back, uncounted
    assert queue.stats()["completed"] == len(finished)
    assert "SIGTERM received: finishing in-flight jobs" in err


def test_ctrl_c_in_a_terminal_stops_gracefully(supervised: Supervised,
                                               client: redis.Redis) -> None:
    # A terminal sends SIGINT to its whole foreground process group. The children have
    # sessions of their own, so each gets one signal (the supervisor's SIGTERM), not two (a
    # second signal would stop a worker at once, cutting its job short).
    queue = QueueManager(client).register("work")
    queue.add_batch([{"slow": 1.0}] * 10)
    supervised.start(2)
    wait_for(lambda: client.llen("test:started") >= 2, 20, "two jobs in flight")
    os.killpg(supervised.pid, signal.SIGINT)
    status, err = supervised.wait(), supervised.output
    assert status == 0, err
    started = [text(j) for j in client.lrange("test:started", 0, -1)]
    assert sorted(started) == sorted(text(j) for j in client.lrange("test:finished", 0, -1))
    assert queue.counts()["leased"] == 0


def test_a_stop_while_children_start_is_graceful(supervised: Supervised,
                                                 client: redis.Redis) -> None:
    # SIGTERM as soon as the children exist, before they can have installed their handlers:
    # they start with the stop signals blocked, so the signal waits for the handlers.
    QueueManager(client).register("work").add_batch([{"sleep": 0.01}] * 5)
    supervised.start(2)
    wait_for(lambda: len(supervised.children()) == 2, 20, "two workers")
    supervised.signal(signal.SIGTERM)
    status, err = supervised.wait(), supervised.output
    assert status == 0, err
    assert "killed by SIGTERM" not in err


def test_children_stop_by_themselves_when_the_supervisor_is_killed(
        supervised: Supervised, client: redis.Redis) -> None:
    supervised.start(2)
    wait_for(lambda: len(supervised.children()) == 2, 20, "two workers")
    children = supervised.children()
    # Past their start-up: each worker is running once it is in the worker registry.
    wait_for(lambda: len(QueueManager(client).workers()) == 2, 20, "two registered workers")
    supervised.signal(signal.SIGKILL)
    supervised.wait()
    wait_for(lambda: not any(alive(pid) for pid in children), 15,
             "the orphaned workers to stop")
    assert supervised.output.count("the supervisor (pid") == 2


def test_a_crash_loop_is_slowed_by_the_restart_backoff(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    crashing = Supervisor([sys.executable, "-c", "import sys; sys.exit(3)"], 1,
                          restart_delay=0.05, max_restart_delay=0.2, poll_interval=0.01)
    result: list[int] = []
    caplog.set_level(logging.INFO, logger="pyqcore.supervisor")
    runner = threading.Thread(target=lambda: result.append(
        crashing.run(install_signal_handlers=False)))
    runner.start()
    try:
        time.sleep(1.5)
    finally:
        crashing.stop()
        runner.join(timeout=10)
    assert result == [1]  # its last run failed
    starts = [r for r in caplog.records if "started (pid" in r.getMessage()]
    delays = [r.getMessage().rsplit("restarting in ", 1)[1] for r in caplog.records
              if "restarting in" in r.getMessage()]
    # 0.05, 0.1, 0.2, 0.2, ... s (plus each start's own time): a handful, not hundreds.
    assert delays[:4] == ["0.05 s", "0.1 s", "0.2 s", "0.2 s"]
    assert 3 <= len(starts) <= 12


def test_a_child_that_exits_cleanly_is_not_restarted(caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    caplog.set_level(logging.INFO, logger="pyqcore.supervisor")
    done = Supervisor([sys.executable, "-c", "pass"], 3, poll_interval=0.01)
    assert done.run(install_signal_handlers=False) == 0
    assert sum("started (pid" in r.getMessage() for r in caplog.records) == 3


def test_a_second_stop_kills_the_children(token: str, tmp_path: Path) -> None:
    stubborn = Supervisor([sys.executable, "-c", "import os, signal, sys, time; "
                           "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                           "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM}); "
                           "open(os.path.join(sys.argv[1], str(os.getpid())), 'w').close(); "
                           "time.sleep(60)", str(tmp_path)], 2, poll_interval=0.01)
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(
        stubborn.run(install_signal_handlers=False)))
    runner.start()
    try:
        wait_for(lambda: len(stubborn.pids()) == 2, 10, "two children")
        # Each child marks a file once it ignores SIGTERM.
        wait_for(lambda: len(list(tmp_path.iterdir())) == 2, 10, "children ignoring SIGTERM")
        stubborn.stop()
        time.sleep(0.3)
        assert len(stubborn.pids()) == 2  # still running their "jobs"
        stubborn.stop()
        runner.join(timeout=10)
    finally:
        for pid in stubborn.pids():
            os.kill(pid, signal.SIGKILL)
        runner.join(timeout=10)
    assert result == [1]  # killed: not a clean stop


def test_a_wrong_app_fails_before_any_process_starts(token: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot import 'nosuch'"):
        run_processes("nosuch:app", 2)
    with pytest.raises(ConfigurationError, match="processes must be an int >= 1"):
        run_processes(APP, 0)
    with pytest.raises(KeyError, match="unknown queue 'nope'"):
        run_processes(APP, 2, queues=["nope"])


def test_default_concurrency_shares_the_cores_among_the_processes() -> None:
    cores = os.cpu_count() or 1
    assert default_concurrency() == cores
    assert default_concurrency(cores) == 1
    assert default_concurrency(cores * 4) == 1


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports nothing listens on now."""
    import socket  # noqa: PLC0415

    while True:
        first = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def test_each_process_serves_its_worker_metrics_on_a_port_of_its_own(
        supervised: Supervised, client: redis.Redis) -> None:
    import urllib.request  # noqa: PLC0415

    queue = QueueManager(client).register("work")
    queue.add_batch([{"sleep": 0.0}] * 20)
    port = consecutive_free_ports(2)
    supervised.start(2, "--metrics-port", str(port))

    def waits_counted() -> float:
        total = 0.0
        for each in (port, port + 1):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{each}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                return -1.0  # not serving yet
            [line] = [line for line in body.splitlines() if line.startswith(
                'pyqcore_worker_job_wait_seconds_count{queue="work"}')]
            total += float(line.split()[-1])
        return total

    wait_for(lambda: waits_counted() == 20, 30, "both processes' metrics to count 20 jobs")
    supervised.signal(signal.SIGTERM)
    assert supervised.wait() == 0, supervised.output
