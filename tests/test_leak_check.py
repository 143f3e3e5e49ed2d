"""The session's leak check (``pytest_sessionfinish`` in tests/conftest.py) bites: a pytest run
whose tests leave redis-servers running fails, names them, and kills them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LEAKY_TESTS = '''
from pyqcore import local_redis
from tests.support import LocalRedis


def test_forgets_its_server() -> None:
    LocalRedis("--maxmemory", "10mb").start()


def test_forgets_a_server_of_the_package_class() -> None:
    local_redis.LocalRedis().start()
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
    assert "2 passed" in out, out
    assert "2 redis-server process(es) this session started were still running" in out, out
    assert "LocalRedis on port" in out and "(args: --maxmemory 10mb)" in out, out
    assert "a redis-server started without tests.support.LocalRedis" in out, out
    pids = [int(line.split("pid ")[1].split(":")[0]) for line in out.splitlines()
            if line.strip().startswith("pid ")]
    assert len(pids) == 2, out
    for pid in pids:  # killed (and reaped by the session that started them)
        assert not Path(f"/proc/{pid}").exists(), pid
