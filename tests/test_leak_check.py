"""No redis-server (nor redis-sentinel) outlives the tests: the session's leak check
(``pytest_sessionfinish`` in tests/conftest.py) fails a run whose tests leave servers running,
names them and kills them; and a test process killed outright takes its servers with it
(parent-death signal)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import SETPRIV

ROOT = Path(__file__).resolve().parents[1]

LEAKY_TESTS = '''
from pyqcore import local_redis
from tests.support import LocalRedis
from tests.support.sentinels import LocalSentinelGroup


def test_forgets_its_server() -> None:
    LocalRedis("--maxmemory", "10mb").start()


def test_forgets_a_server_of_the_package_class() -> None:
    local_redis.LocalRedis().start()


def test_forgets_a_sentinel_group() -> None:
    LocalSentinelGroup(replicas=0, sentinels=1).start()
'''


def test_a_run_that_leaves_servers_running_fails_and_names_them(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_sessionfinish  # noqa: F401\n")
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out  # both tests passed: the leak check failed the run
    assert "3 passed" in out, out
    assert "4 Redis process(es) this session started were still running" in out, out
    assert "LocalRedis on port" in out and "(args: --maxmemory 10mb)" in out, out
    assert "a redis-server started without tests.support.LocalRedis" in out, out
    assert "LocalSentinel on port" in out, out
    pids = [int(line.split("pid ")[1].split(":")[0]) for line in out.splitlines()
            if line.strip().startswith("pid ")]
    assert len(pids) == 4, out
    for pid in pids:  # killed (and reaped by the session that started them)
        assert not Path(f"/proc/{pid}").exists(), pid


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (absent, or a zombie no one has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is missing")
def test_a_killed_test_process_takes_its_server_with_it() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", "import time; from tests.support import LocalRedis; "
         "server = LocalRedis().start(); print(server.process.pid, flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert starter.stdout is not None
        pid = int(starter.stdout.readline())
        assert not gone(pid)
    finally:
        starter.kill()  # no clean-up of its own can run
        starter.wait()
    deadline = time.monotonic() + 10
    while not gone(pid):
        assert time.monotonic() < deadline, f"redis-server {pid} outlived the killed process"
        time.sleep(0.02)
