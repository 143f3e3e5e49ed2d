"""The pyqcore command against real Redis servers (the session's, never 6379): in-process
through click's CliRunner, and as a subprocess where the exit status and stderr matter."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result

from pyqcore import BaseQueue, QueueManager
from pyqcore.cli import cli, main
from pyqcore.rates import Rates
from pyqcore.sync import supervisor
from pyqcore.sync.driver import Client
from pyqcore.sync.worker import Worker
from tests.support import LocalRedis, LocalRedisCluster, free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent

# The app that the `worker` tests run (`tests.test_cli:app`): a manager on the server named
# by PYQCORE_CLI_TEST_URL (set by the subprocess tests; in-process tests replace `app`).
app = QueueManager(redis.Redis.from_url(os.environ.get("PYQCORE_CLI_TEST_URL",
                                                       "redis://127.0.0.1:1/0")))
app.register("mail", handler=lambda job: None)
app.register("idle", handler=lambda job: None)
no_handlers = QueueManager(redis.Redis.from_url("redis://127.0.0.1:1/0"))
no_handlers.register("mail")


def invoke(server: LocalRedis | LocalRedisCluster, *args: str, input: str | None = None
           ) -> Result:
    """Run ``pyqcore --url <server> ARGS`` in-process."""
    return CliRunner().invoke(cli, ["--url", server.url, *args], input=input)


def ok(server: LocalRedis | LocalRedisCluster, *args: str) -> str:
    result = invoke(server, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def one_error_line(stderr: str) -> str:
    """The error a failed command printed: exactly one line, ``pyqcore: ...``."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("pyqcore: "), stderr
    return lines[0]


def bury(queue: BaseQueue, count: int) -> list[str]:
    """Add ``count`` jobs to ``queue`` and fail each for good; their ids."""
    queue.add_batch([f"p{i}" for i in range(count)])
    ids: list[str] = []
    while jobs := queue.reserve(count=100):
        for job in jobs:
            queue.fail(job, ValueError(f"bad {job.payload}"), retry=False)
            ids.append(job.id)
    return ids


def row(output: str, name: str) -> list[str]:
    """The cells of table row ``name``."""
    for line in output.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells[1:]
    raise AssertionError(f"no row {name!r} in:\n{output}")


# -- stats and top --------------------------------------------------------------------------


def test_stats_sums_counts_and_counters_over_partitions(
        redis_server: LocalRedis, client: Client) -> None:
    queue = QueueManager(client).register("mail", partitions=3)
    queue.add_batch([f"p{i}" for i in range(7)])
    acked = 0
    while acked < 4:  # a reserve reads one partition: walk them until 4 are done
        jobs = queue.reserve(count=4 - acked)
        acked += queue.ack(jobs)
    (doomed,) = queue.reserve(count=1)
    queue.fail(doomed, ValueError("x"), retry=False)
    QueueManager(client).register("thumbs").add("x")
    out = ok(redis_server, "stats")
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["queue"])
    assert header == ["queue", "parts", "ready", "delayed", "leased", "dead", "added",
                      "completed", "retried", "died", "reclaimed", "redriven", "purged",
                      "orphaned"]
    # parts ready delayed leased dead | added completed retried died ...
    assert row(out, "mail")[:9] == ["3", "2", "0", "0", "1", "7", "4", "0", "1"]
    assert row(out, "thumbs")[:7] == ["1", "1", "0", "0", "0", "1", "0"]
    only = ok(redis_server, "stats", "--queue", "thumbs")
    assert "thumbs" in only and "mail" not in only


def test_stats_with_no_queues(redis_server: LocalRedis, client: Client) -> None:
    assert ok(redis_server, "stats") == "no queues under prefix 'pyqcore'\n"


def test_stats_on_a_cluster(redis_cluster: LocalRedisCluster) -> None:
    client = redis_cluster.client()
    client.flushall()
    QueueManager(client).register("mail", partitions=4).add_batch(["a", "b", "c"])
    out = ok(redis_cluster, "--cluster", "stats")
    assert row(out, "mail")[:2] == ["4", "3"]
    client.flushall()
    client.close()


def test_top_once_shows_every_queue(redis_server: LocalRedis, client: Client) -> None:
    manager = QueueManager(client)
    manager.register("mail").add_batch(["a", "b"])
    manager.register("thumbs", partitions=2).add("x")
    out = ok(redis_server, "top", "--once", "--interval", "0.05")
    assert "pyqcore top" in out and "completed/s" in out
    assert row(out, "mail") == ["2", "0", "0", "0", "0.0", "0"]
    assert row(out, "thumbs") == ["1", "0", "0", "0", "0.0", "0"]


def test_the_completed_rate_is_measured_over_the_window() -> None:
    rates = Rates(window=10.0)
    assert rates.rate("mail") is None
    rates.add(100.0, {"mail": 0})
    assert rates.rate("mail") is None  # one sample: no rate yet
    for second in range(1, 21):
        rates.add(100.0 + second, {"mail": second * 50})
    assert rates.rate("mail") == pytest.approx(50.0)
    rates.add(121.0, {"mail": 1000})  # nothing completed in the last second
    assert rates.rate("mail") == pytest.approx((1000 - 550) / 10)
    assert len(rates.samples["mail"]) <= 12  # older samples are dropped


# -- the dead-letter queue ------------------------------------------------------------------


def test_dlq_list_requeue_and_purge(redis_server: LocalRedis, client: Client) -> None:
    queue = QueueManager(client).register("mail")
    bury(queue, 3)
    listing = ok(redis_server, "dlq", "list")
    assert row(listing, "mail")[0] == "1" and "ValueError: bad p0" in listing
    assert len(re.findall(r"^\s*mail\s", listing, re.MULTILINE)) == 3
    assert ok(redis_server, "dlq", "requeue", "--queue", "mail", "1") == "requeued 1 job\n"
    assert ok(redis_server, "dlq", "purge", "--queue", "mail", "2", "--yes") == \
        "purged 1 job\n"
    assert queue.counts() == {"ready": 1, "delayed": 0, "leased": 0, "dead": 1}
    assert ok(redis_server, "dlq", "requeue", "--all") == "requeued 1 job\n"
    assert queue.counts()["ready"] == 2
    assert ok(redis_server, "dlq", "list", "--queue", "mail") == "no dead jobs in queue 'mail'\n"


def test_pause_resume_and_groups(redis_server: LocalRedis, client: Client) -> None:
    queue = QueueManager(client).register("mail")
    queue.add_batch(["a1", "a2"], group="acme")
    queue.add("b1", group="bolt")
    assert ok(redis_server, "pause", "mail") == "paused queue 'mail'\n"
    assert ok(redis_server, "pause", "mail") == "queue 'mail' was already paused\n"
    assert queue.is_paused() and queue.reserve() == []
    assert ok(redis_server, "resume", "mail") == "resumed queue 'mail'\n"
    assert ok(redis_server, "pause", "mail", "--group", "acme") == \
        "paused group 'acme' of queue 'mail'\n"
    assert [j.payload for j in queue.reserve(count=5)] == ["b1"]
    listing = ok(redis_server, "groups", "mail")
    assert row(listing, "acme") == ["2", "0", "paused"] and row(listing, "bolt") == ["0", "1"]
    assert ok(redis_server, "resume", "mail", "--group", "acme") == \
        "resumed group 'acme' of queue 'mail'\n"
    assert len(queue.reserve(count=5)) == 2
    assert invoke(redis_server, "pause", "nope").exit_code == 1  # unknown queue


def test_events_prints_what_the_stream_keeps_and_follows_new_ones(
    redis_server: LocalRedis, client: Client
) -> None:
    queue = BaseQueue(client, name="watched", events=True, partitions=2)
    first, second = queue.add_batch(["a", "b"], job_ids=["order-1", "order-2"])
    part = {i: f"#{(queue.get_job(i) or pytest.fail(i)).partition}" for i in (first, second)}
    [job] = queue.reserve()
    queue.ack(job)
    lines = ok(redis_server, "events", "watched").splitlines()
    fields = [line.split()[2:] for line in lines]  # after the date and time
    assert sorted(fields) == sorted([[part[first], "added", first, "attempt", "0"],
                                     [part[second], "added", second, "attempt", "0"],
                                     [f"#{job.partition}", "started", job.id, "attempt", "1"],
                                     [f"#{job.partition}", "completed", job.id, "attempt", "1"]])
    assert len(ok(redis_server, "events", "watched", "--count", "2").splitlines()) == 2
    # --follow waits for new events; --count ends it once they came
    def add_once_followed() -> None:
        wait_for(lambda: any(c.get("cmd") == "xread" for c in client.client_list()),
                 what="pyqcore events --follow blocking in XREAD")
        queue.add("c", job_id="order-3")

    added = threading.Thread(target=add_once_followed)
    added.start()
    followed = ok(redis_server, "events", "watched", "--follow", "--count", "5")
    added.join()
    assert followed.splitlines()[-1].split()[3:] == ["added", "order-3", "attempt", "0"]


def test_events_of_an_unknown_queue_or_one_without_events_is_a_clear_error(
    redis_server: LocalRedis, client: Client
) -> None:
    BaseQueue(client, name="silent").add("x")
    for name, says in (("nope", "unknown queue 'nope'"), ("silent", "writes no events")):
        result = invoke(redis_server, "events", name)
        assert result.exit_code == 1
        assert says in one_error_line(result.stderr)


def test_dlq_list_shows_payloads_as_text_not_markup(redis_server: LocalRedis,
                                                     client: Client) -> None:
    queue = QueueManager(client).register("mail")
    queue.add({"tags": "[bold]x[/bold]"})
    (job,) = queue.reserve()
    queue.fail(job, ValueError("[red]boom"), retry=False)
    out = ok(redis_server, "dlq", "list")
    assert "[bold]x[/bold]" in out and "ValueError: [red]boom" in out


def test_purge_without_a_selector_is_refused(redis_server: LocalRedis, client: Client) -> None:
    queue = QueueManager(client).register("mail")
    bury(queue, 2)
    for args in ([], ["--yes"], ["--older-than", "0"], ["1", "2"], ["--all", "--queue", "mail"]):
        result = invoke(redis_server, "dlq", "purge", *args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        one_error_line(result.stderr)
    assert "needs a selector" in invoke(redis_server, "dlq", "purge", "--yes").stderr
    assert queue.counts()["dead"] == 2


def test_purge_asks_first_and_does_nothing_on_no(redis_server: LocalRedis,
                                                  client: Client) -> None:
    queue = QueueManager(client).register("mail")
    bury(queue, 2)
    refused = invoke(redis_server, "dlq", "purge", "--queue", "mail", input="n\n")
    assert refused.exit_code == 1
    assert "Purge 2 dead jobs of queue 'mail' for good? [y/N]" in refused.stderr
    assert refused.stderr.splitlines()[-1] == "pyqcore: not confirmed: nothing purged"
    assert queue.counts()["dead"] == 2
    no_answer = invoke(redis_server, "dlq", "purge", "--all")  # end of input: no
    assert no_answer.exit_code == 1 and queue.counts()["dead"] == 2
    assert "Purge 2 dead jobs of 1 queue under prefix 'pyqcore'" in no_answer.stderr
    confirmed = invoke(redis_server, "dlq", "purge", "--queue", "mail", input="y\n")
    assert confirmed.exit_code == 0 and confirmed.stdout == "purged 2 jobs\n"
    assert queue.counts()["dead"] == 0
    assert ok(redis_server, "dlq", "purge", "--all") == \
        "nothing to purge: no jobs dead in 1 queue under prefix 'pyqcore'\n"


def test_purge_by_age_counts_and_deletes_only_the_older(redis_server: LocalRedis,
                                                        client: Client) -> None:
    queue = QueueManager(client).register("mail")  # real clock: the CLI's cutoff is now
    bury(queue, 2)
    assert ok(redis_server, "dlq", "purge", "--all", "--older-than", "3600") == \
        "nothing to purge: no jobs dead for more than 3600 s in 1 queue under prefix " \
        "'pyqcore'\n"
    asked = invoke(redis_server, "dlq", "purge", "--all", "--older-than", "0.001", input="n")
    assert "Purge 2 dead jobs dead for more than 0.001 s" in asked.stderr
    assert ok(redis_server, "dlq", "purge", "--all", "--older-than", "0.001", "--yes") == \
        "purged 2 jobs\n"


def test_requeue_and_purge_of_a_partitioned_queue(redis_server: LocalRedis,
                                                  client: Client) -> None:
    queue = QueueManager(client).register("mail", partitions=3)
    ids = bury(queue, 9)
    assert queue.counts()["dead"] == 9
    asked = invoke(redis_server, "dlq", "purge", "--queue", "mail", ids[0], ids[4], "nope",
                   input="n")
    assert "Purge 2 dead jobs" in asked.stderr
    assert ok(redis_server, "dlq", "purge", "--queue", "mail", ids[0], ids[4], "-y") == \
        "purged 2 jobs\n"
    assert ok(redis_server, "dlq", "requeue", "--queue", "mail") == "requeued 7 jobs\n"
    assert queue.counts() == {"ready": 7, "delayed": 0, "leased": 0, "dead": 0}


@pytest.mark.parametrize("args", [["dlq", "list", "--queue", "nosuch"],
                                  ["dlq", "requeue", "--queue", "nosuch"],
                                  ["dlq", "purge", "--queue", "nosuch", "--yes"],
                                  ["stats", "--queue", "nosuch"]])
def test_unknown_queues_are_an_error_listing_the_known_ones(
        redis_server: LocalRedis, client: Client, args: list[str]) -> None:
    manager = QueueManager(client)
    bury(manager.register("mail"), 1)
    manager.register("thumbs", partitions=2).add("x")
    result = invoke(redis_server, *args)
    assert result.exit_code == 1 and result.stdout == ""
    assert one_error_line(result.stderr) == \
        "pyqcore: unknown queue 'nosuch' under prefix 'pyqcore' (known: mail, thumbs)"
    assert manager.dead_letter_queue.count() == 1


def test_a_long_purge_shows_a_progress_bar_on_a_terminal_only(
        redis_server: LocalRedis, client: Client) -> None:
    queue = QueueManager(client).register("mail")
    bury(queue, 1200)  # > PROGRESS_MIN: two purge calls
    command = [sys.executable, "-m", "pyqcore", "--url", redis_server.url, "dlq", "purge",
               "--queue", "mail", "--yes"]
    master, terminal = pty.openpty()
    with subprocess.Popen(command, stdout=terminal, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, cwd=ROOT) as proc:
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            shown += chunk
        os.close(master)
    assert proc.returncode == 0
    assert b"purging" in shown and b"1200/1200" in shown and b"purged 1200 jobs" in shown
    bury(queue, 1200)
    piped = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    assert piped.stdout == "purged 1200 jobs\n" and piped.stderr == ""


# -- errors: one line, no traceback ---------------------------------------------------------


def run_cli(*args: str, url: str | None = None, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    """``python -m pyqcore ARGS`` as a subprocess (stdin closed unless ``input``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYQCORE_REDIS_URL", "REDIS_URL", "PYQCORE_DEBUG")}
    env["PYTHONPATH"] = str(ROOT)
    if url is not None:
        env["PYQCORE_CLI_TEST_URL"] = url
    return subprocess.run([sys.executable, "-m", "pyqcore", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, input=input or "", timeout=60,
                          check=False)


def test_each_error_is_one_line_with_a_non_zero_status(redis_server: LocalRedis,
                                                       client: Client) -> None:
    QueueManager(client).register("mail").add("x")
    url = redis_server.url
    host_port = url.removeprefix("redis://").split("/")[0]
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    cases = {
        ("--url", "foo://x", "stats"): "pyqcore: invalid Redis URL 'foo://x'",
        ("--url", unreachable, "stats"): f"pyqcore: cannot connect to Redis at {unreachable}",
        ("--url", f"redis://nobody:secret@{host_port}/0", "stats"):
            f"pyqcore: Redis at redis://nobody:***@{host_port}/0 refused the credentials",
        ("worker", "nosuch:app"): "pyqcore: cannot import 'nosuch' (from 'nosuch:app')",
        ("worker", "os:path"): "pyqcore: os:path is a module, not a pyqcore.QueueManager",
        ("worker", "tests.test_cli:nothing"):
            "pyqcore: module 'tests.test_cli' has no attribute 'nothing'",
        ("worker", "tests.test_cli:no_handlers", "--burst"):
            "pyqcore: no queue registered by tests.test_cli:no_handlers has a handler",
        ("--url", url, "--prefix", "a b", "stats"): "pyqcore: prefix 'a b' may not contain",
        ("--url", url, "dlq", "list", "--queue", "nosuch"):
            "pyqcore: unknown queue 'nosuch' under prefix 'pyqcore' (known: mail)",
        ("worker", "tests.test_cli:app", "--queue", "nosuch", "--burst"):
            "pyqcore: unknown queue 'nosuch' (known: idle, mail)",
        ("worker", "tests.test_cli:app", "--queue", "mail", "--processes", "0"):
            "pyqcore: Invalid value for '--processes' / '-p'",
        ("--url", url, "dlq", "purge"): "pyqcore: dlq purge needs a selector",
        ("--url", url, "nosuch"): "pyqcore: No such command 'nosuch'",
    }
    for args, expected in cases.items():
        done = run_cli(*args, url=url)
        assert done.returncode != 0, args
        assert one_error_line(done.stderr).startswith(expected), (args, done.stderr)
        assert secret_free(done.stderr)


def secret_free(text: str) -> bool:
    return "secret" not in text


def test_main_returns_the_exit_status(redis_server: LocalRedis, client: Client,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "foo://x", "stats"]) == 1  # an error
    assert main(["stats", "--bogus"]) == 2  # a wrong command line
    assert main(["--help"]) == 0
    assert main(["--url", redis_server.url, "stats"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "pyqcore: invalid Redis URL 'foo://x': Redis URL must specify one of the following "
        "schemes (redis://, rediss://, unix://)",
        "pyqcore: No such option '--bogus'. (see 'pyqcore stats --help')"]


def test_purge_in_a_subprocess_reads_the_answer_from_stdin(redis_server: LocalRedis,
                                                           client: Client) -> None:
    queue = QueueManager(client).register("mail")
    bury(queue, 3)
    refused = run_cli("--url", redis_server.url, "dlq", "purge", "--queue", "mail", input="n\n")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("Purge 3 dead jobs of queue 'mail' for good? [y/N]")
    assert refused.stderr.splitlines()[-1] == "pyqcore: not confirmed: nothing purged"
    closed = run_cli("--url", redis_server.url, "dlq", "purge", "--queue", "mail")
    assert closed.returncode == 1 and "Traceback" not in closed.stderr
    assert closed.stderr.splitlines()[-1] == \
        "pyqcore: no answer: nothing purged (--yes purges without asking)"
    assert queue.counts()["dead"] == 3


# -- scripts and worker ---------------------------------------------------------------------


def test_scripts_prints_contracts_and_redis_cli_lines(redis_server: LocalRedis) -> None:
    out = ok(redis_server, "scripts", "--queue", "mail")
    assert "== reserve  sha1" in out
    assert "redis-cli --eval" in out and "pyqcore:{mail}:ready" in out
    assert re.search(r"^== ack  sha1 [0-9a-f]{40}  flags allow-oom$", out, re.M)
    assert re.search(r"^== enqueue  sha1 [0-9a-f]{40}$", out, re.M)
    # the line sends the keys every call sends: not the optional events stream
    [ack_line] = [line for line in out.splitlines() if "ack.lua " in line]
    assert "pyqcore:{mail}:wake , ARGV" in ack_line and ":events" not in ack_line


def test_worker_burst_runs_the_named_queues(client: Client,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []
    manager = QueueManager(client)
    manager.register("mail", handler=lambda job: done.append(f"mail {job.payload}"))
    manager.register("thumbs", handler=lambda job: done.append(f"thumbs {job.payload}"))
    manager.register("idle", handler=lambda job: done.append("idle"))
    manager.get_queue("mail").add_batch(["a", "b"])
    manager.get_queue("thumbs").add("c")
    manager.get_queue("idle").add("never")
    monkeypatch.setattr(sys.modules[__name__], "app", manager)
    result = CliRunner().invoke(cli, ["worker", "tests.test_cli:app", "--queue", "mail",
                                      "--queue", "thumbs", "--burst", "-c", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(done) == ["mail a", "mail b", "thumbs c"]
    assert "mail: WorkerReport(delivered=2, acked=2" in result.stdout
    assert manager.get_queue("idle").counts()["ready"] == 1


def test_worker_concurrency_defaults_to_one_slot_per_core(client: Client,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    slots: list[int] = []

    class Recording(Worker):
        def __init__(self, queue: Any, **options: Any) -> None:
            slots.append(options["concurrency"])
            super().__init__(queue, **options)

    manager = QueueManager(client)
    manager.register("mail", handler=lambda job: None).add("x")
    monkeypatch.setattr(supervisor, "Worker", Recording)
    monkeypatch.setattr(sys.modules[__name__], "app", manager)
    result = CliRunner().invoke(cli, ["worker", "tests.test_cli:app", "--burst"])
    assert result.exit_code == 0, result.output
    assert slots == [os.cpu_count() or 1]
    assert supervisor.default_concurrency(processes=2) == max(1, (os.cpu_count() or 1) // 2)


@pytest.mark.parametrize("processes", [[], ["--processes", "1"]])  # one, or a supervisor's
def test_worker_schedules_adds_the_due_runs_of_its_queues_schedules(
        redis_server: LocalRedis, client: Client, processes: list[str]) -> None:
    manager = QueueManager(client)
    manager.schedule("mail-tick", "mail", "tick", every=1)
    manager.schedule("idle-tick", "idle", "tick", every=1)  # a queue this worker does not run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYQCORE_CLI_TEST_URL": redis_server.url}
    worker = subprocess.Popen([sys.executable, "-m", "pyqcore", "worker", "tests.test_cli:app",
                               "--queue", "mail", "--schedules", "-c", "1", *processes],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    mail = BaseQueue(client, name="mail")
    try:
        wait_for(lambda: mail.stats().get("completed", 0) >= 2, 30)  # two due times, run
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "mail: WorkerReport(delivered=" in out
    due = {s.name: s.next_due for s in manager.schedules()}
    mail_due, idle_due = due["mail-tick"], due["idle-tick"]
    assert mail_due and idle_due and mail_due > idle_due  # claimed again and again; idle's never
    assert BaseQueue(client, name="idle").counts()["ready"] == 0


def test_workers_lists_the_running_workers(redis_server: LocalRedis, client: Client) -> None:
    assert "no workers" in ok(redis_server, "workers")
    worker = Worker(BaseQueue(client, name="mail", handler=print), concurrency=2)
    worker.queue.driver.run(worker.presence.beat())
    [line] = [line for line in ok(redis_server, "workers").splitlines() if "mail" in line]
    assert worker.presence.id in line and " sync " in f" {line} " and " 2 " in line


def test_metrics_serves_the_queues_to_prometheus(redis_server: LocalRedis,
                                                 client: Client) -> None:
    import urllib.request  # noqa: PLC0415 - only this test fetches over HTTP

    from tests.support import free_port  # noqa: PLC0415

    BaseQueue(client, name="mail").add_batch(range(3))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "pyqcore", "--url", redis_server.url,
                               "metrics", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the exporter did not come up"
                time.sleep(0.05)
        assert 'pyqcore_jobs{queue="mail",state="ready"} 3.0' in body
        assert 'pyqcore_jobs_added_total{queue="mail"} 3.0' in body
    finally:
        server.terminate()
        server.wait(10)


def readme_block(containing: str) -> str:
    """The README's ```sh block that contains ``containing``."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```sh\n")[1:]]
    [block] = [b for b in blocks if containing in b]
    return block


def test_the_readmes_redis_cli_lines_add_a_job_a_worker_runs(redis_server: LocalRedis,
                                                             client: Client,
                                                             tmp_path: Path) -> None:
    """The README's lines as written, with the real redis-cli (a shim on PATH points it at
    the test's server) and the pyqcore command; then a Python worker gets the job."""
    shim = tmp_path / "redis-cli"
    real = subprocess.run(["bash", "-c", "command -v redis-cli"], capture_output=True,
                          text=True, check=True).stdout.strip()
    shim.write_text(f'#!/bin/sh\nexec {real} -p {redis_server.port} "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{tmp_path}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-euo", "pipefail", "-c",
                          readme_block("pyqcore record")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    decoded = json.loads(out.strip().splitlines()[-1])
    assert decoded["payload"] == {"to": "a@example.com"} and decoded["context"] is None
    seen: list[object] = []
    queue = BaseQueue(client, name="demo", handler=lambda job: seen.append(job.payload))
    assert queue.process(burst=True, install_signal_handlers=False).acked == 1
    assert seen == [{"to": "a@example.com"}]


def test_the_readme_s_command_table_names_every_command() -> None:
    """README, "The command line": a row for every command (a group's by its subcommands),
    and no row for a command that does not exist."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### The command line", 1)[1].split("| command | what it does |")[1]
    rows = table.split("\n\n", 1)[0].splitlines()[2:]
    named = {re.match(r"[a-z]+(?: [a-z]+)*", cell.split("`")[1]).group()  # type: ignore[union-attr]
             for row in rows for cell in row.split("|")[1].split(", ")}
    commands = set()
    for name, command in cli.commands.items():
        group = command.commands if isinstance(command, click.Group) else {}
        commands |= {f"{name} {sub}" for sub in group} or {name}
    assert named == commands


def test_schedules_are_added_listed_and_removed_after_a_confirmation(
    redis_server: LocalRedis, client: Client,
) -> None:
    added = ok(redis_server, "schedules", "add", "nightly", "--queue", "reports", "--cron",
               "0 2 * * *", "--tz", "Europe/Paris", "--payload", '{"kind": "sales"}')
    assert added.startswith("schedule 'nightly' adds to queue 'reports'; next run due ")
    listed = ok(redis_server, "schedules", "list")
    assert "nightly" in listed and "cron 0 2 * * * (Europe/Paris)" in listed
    assert '{"kind": "sales"}' in listed
    bad = invoke(redis_server, "schedules", "add", "x", "--queue", "q", "--cron", "61 * * * *")
    assert bad.exit_code == 1
    assert one_error_line(bad.stderr) == "pyqcore: not a cron expression: '61 * * * *'"
    refused = invoke(redis_server, "schedules", "remove", "nightly", input="n\n")
    assert refused.exit_code == 1
    assert "Remove schedule 'nightly'? [y/N]" in refused.stderr
    assert refused.stderr.splitlines()[-1] == "pyqcore: not confirmed: nothing removed"
    assert [s.name for s in QueueManager(client).schedules()] == ["nightly"]
    assert ok(redis_server, "schedules", "remove", "nightly", "--yes") == \
        "removed schedule 'nightly'\n"
    assert ok(redis_server, "schedules", "list") == "no schedules under prefix 'pyqcore'\n"
    missing = invoke(redis_server, "schedules", "remove", "nightly", "--yes")
    assert one_error_line(missing.stderr) == \
        "pyqcore: no schedule named 'nightly' under prefix 'pyqcore'"
# -- clear ----------------------------------------------------------------------------------


def test_clear_asks_first_then_deletes_every_waiting_job(redis_server: LocalRedis,
                                                          client: Client) -> None:
    queue = QueueManager(client).register("mail", partitions=2)
    queue.add_batch(range(5))
    queue.add("later", delay=60)
    [held] = queue.reserve()
    refused = invoke(redis_server, "clear", "mail", input="n\n")
    assert refused.exit_code == 1
    assert "Delete 5 waiting jobs of queue 'mail'? [y/N]" in refused.stderr
    assert refused.stderr.splitlines()[-1] == "pyqcore: not confirmed: nothing deleted"
    assert queue.counts() == {"ready": 4, "delayed": 1, "leased": 1, "dead": 0}
    no_answer = invoke(redis_server, "clear", "mail")  # end of input: no
    assert no_answer.exit_code == 1 and queue.counts()["ready"] == 4
    assert ok(redis_server, "clear", "mail", "--yes") == "deleted 5 jobs\n"
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 1, "dead": 0}
    assert ok(redis_server, "clear", "mail") == \
        "nothing to clear: no jobs waiting in queue 'mail'\n"
    assert queue.ack(held) == 1
    unknown = invoke(redis_server, "clear", "nope", "--yes")
    assert unknown.exit_code != 0 and "unknown queue 'nope'" in unknown.stderr
