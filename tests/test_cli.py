"""The pyqcore command against a real Redis: stats, dlq list/requeue/purge, scripts."""

from __future__ import annotations

import pytest
import redis

from pyqcore import QueueManager
from pyqcore.cli import main
from tests.support import LocalRedis, LocalRedisCluster


def run(capsys: pytest.CaptureFixture[str], server: LocalRedis, *args: str) -> str:
    assert main(["--url", server.url, *args]) == 0
    return capsys.readouterr().out


def test_stats_and_dead_letter_commands(redis_server: LocalRedis, client: redis.Redis,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    queue = QueueManager(client).register("mail")
    queue.add_batch(["a", "b"])
    for job in queue.reserve(count=2):
        queue.fail(job, ValueError(f"bad {job.payload}"), retry=False)
    assert "mail: ready=0 delayed=0 leased=0 dead=2" in run(capsys, redis_server, "stats")
    listing = run(capsys, redis_server, "dlq", "list")
    assert "mail/1" in listing and "ValueError: bad a" in listing
    assert run(capsys, redis_server, "dlq", "requeue", "mail", "1") == "requeued 1 jobs\n"
    assert run(capsys, redis_server, "dlq", "purge", "--queue", "mail") == "purged 1 jobs\n"
    assert queue.counts() == {"ready": 1, "delayed": 0, "leased": 0, "dead": 0}


def test_scripts_prints_contracts_and_redis_cli_lines(
    redis_server: LocalRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(capsys, redis_server, "scripts", "--queue", "mail")
    assert "== reserve  sha1" in out
    assert "redis-cli --eval" in out and "pyqcore:{mail}:ready" in out


def test_errors_are_reported_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "redis://127.0.0.1:1/0", "stats"]) == 1
    assert "ConnectionError" in capsys.readouterr().err


def test_stats_on_a_cluster(redis_cluster: LocalRedisCluster,
                            capsys: pytest.CaptureFixture[str]) -> None:
    client = redis_cluster.client()
    QueueManager(client).register("mail").add("x")
    assert main(["--url", redis_cluster.url, "--cluster", "stats"]) == 0
    assert "mail: ready=1" in capsys.readouterr().out
    client.delete("pyqcore:{mail}:ready", "pyqcore:{mail}:jobs", "pyqcore:{mail}:stats",
                  "pyqcore:queues")
