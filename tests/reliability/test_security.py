"""Security: pyqcore end to end as a Redis ACL user limited to the ``pyqcore:*`` keys and the
exact commands pyqcore sends (the ones its Lua scripts call included: Redis checks those
against the caller's ACL too), and over TLS (``rediss://``) with a self-signed CA.

Every server here is a redis-server this module starts on a free loopback port.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, ResponseError
from redis.retry import Retry

from pyqcore import BaseQueue, GroupCounts, Job, Outcome, QueueManager
from pyqcore.core.calls import lock_call
from pyqcore.errors import LockNotAcquiredError, NonRetryableError
from tests.support import LocalRedis, free_port, tls_unsupported, wait_until

ACL_USERNAME = "pyqcore"
ACL_PASSWORD = "test-only-secret"

# What pyqcore itself sends, outside scripts (the registry, the wake lists, the worker
# registry's beats: HSET, PEXPIRE, ZADD, ZREMRANGEBYSCORE, and DEL + ZREM on leaving).
CLIENT_COMMANDS = ("evalsha", "eval", "sadd", "smembers", "hget", "hsetnx", "hgetall", "blpop",
                   "hset", "pexpire", "zadd", "zremrangebyscore", "del", "zrem", "exists",
                   "xread", "xrevrange")  # (events: on a cluster's partitioned queue, xrange)
# What pyqcore's Lua scripts call (Redis checks each redis.call against the caller's ACL).
# (INFO: room.lua reads the server's memory before a batch of several script calls.)
SCRIPT_COMMANDS = ("del", "get", "set", "hdel", "hexists", "hget", "hincrby", "hlen", "hmget",
                   "hset", "hsetnx", "info", "llen", "lpop", "lpush", "rpush", "pexpire", "pttl",
                   "time", "zadd", "zcard", "zcount", "zmscore", "zrange", "zrangebyscore",
                   "zrem", "zscore", "exists", "zrangebylex", "zrevrangebylex", "zlexcount",
                   "zremrangebylex", "xadd", "xrevrange")
PYQCORE_COMMANDS = tuple(sorted(set(CLIENT_COMMANDS) | set(SCRIPT_COMMANDS)))

# The exact line documented in the README (with a real password in place of this one).
ACL_SETUSER = (f"ACL SETUSER {ACL_USERNAME} reset on >{ACL_PASSWORD} ~pyqcore:* resetchannels "
               "-@all " + " ".join(f"+{c}" for c in PYQCORE_COMMANDS))

# Left out of the "every allowed command was used" check: what the admin connection of these
# tests sends while the pyqcore user runs, and HELLO (the RESP3 handshake with AUTH, which Redis
# allows every user, like AUTH).
NOT_PYQCORE = {"config|resetstat", "script|flush", "client|list", "acl|log", "client|setinfo",
               "hello"}


def acl_url(server: LocalRedis) -> str:
    """The server's URL with the pyqcore user's credentials in it."""
    return f"redis://{ACL_USERNAME}:{ACL_PASSWORD}@127.0.0.1:{server.port}/0"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[LocalRedis]:
    """A server of this module's own, with the pyqcore ACL user created from ACL_SETUSER."""
    with LocalRedis() as server:
        admin = server.client()
        admin.execute_command(*ACL_SETUSER.split())  # type: ignore[no-untyped-call]
        admin.close()
        yield server


@pytest.fixture
def admin(acl_server: LocalRedis) -> Iterator[redis.Redis]:
    """The default (all-powerful) user, for set-up and inspection; the data is flushed first."""
    client = acl_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def user_client(acl_server: LocalRedis) -> Iterator[redis.Redis]:
    """A client logged in as the pyqcore ACL user through its URL."""
    client = redis.Redis.from_url(acl_url(acl_server), socket_timeout=5.0)
    yield client
    client.close()


class Mailer(BaseQueue):
    """Fails jobs whose payload says so, for the DLQ path."""

    name = "emails"
    max_retries = 1
    visibility_timeout = 5.0

    def process_job(self, job: Job) -> None:
        if job.payload.get("bounce"):
            raise NonRetryableError("mailbox does not exist")


def command_calls(admin: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls} (rejected calls are not counted as calls)."""
    stats = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            if int(v["calls"])}


def run_everything(client: redis.Redis, admin: redis.Redis) -> None:
    """Every public path of pyqcore on ``client``: register, add, add_batch, reserve, ack,
    fail, the DLQ (items, redrive, purge), counts, stats, an item lock, a blocking worker
    woken by an add, a burst worker, and a SCRIPT FLUSH (EVALSHA -> NOSCRIPT -> EVAL)."""
    manager = QueueManager(client)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CONFIG GET is denied: no warning, no crash
        manager.register(Mailer)
        thumbs = manager.register("thumbs", handler=lambda job: None, partitions=2)
    emails = manager.get_queue("emails")

    emails.add({"to": "a@example.com"}, context={"user": 7})
    emails.add_batch([{"to": f"u{i}@example.com"} for i in range(20)])
    emails.add({"to": "later@example.com"}, delay=60.0, job_id="order-42")
    emails.add({"to": "b@example.com"}, delay=60.0, job_id="24")  # the next automatic id
    assert emails.add({"to": "c@example.com"}, delay=60.0) == "24~1"  # so it steps around it
    assert emails.add_batch([{"to": "d@example.com"}, {"to": "e@example.com"}], delay=60.0,
                            job_ids=[None, "25"]) == ["25~1", "25"]
    jobs = emails.reserve(count=5)
    assert len(jobs) == 5 and emails.ack(jobs) == 5
    [job] = emails.reserve()
    assert emails.extend(job, 10.0) == 1
    assert emails.fail(job, RuntimeError("transient")) is Outcome.RETRY
    assert emails.counts() == {"ready": 15, "delayed": 6, "leased": 0, "dead": 0}

    emails.add({"to": "nobody@example.com", "bounce": True}, job_id="bounce")
    report = emails.process(burst=True, install_signal_handlers=False)
    assert report.acked == 15 and report.dead == 1

    dlq = manager.dead_letter_queue
    [item] = dlq.items(queue="emails")
    assert item.error is not None
    assert (item.job_id, item.error.type) == ("bounce", "NonRetryableError")
    assert dlq.reprocess_item(item)  # redrive
    [job] = emails.reserve()
    assert emails.fail(job, NonRetryableError("still bouncing"), retry=False) is Outcome.DEAD
    assert dlq.count() == 1
    assert dlq.purge("emails", ids=["bounce"]) == 1
    assert manager.monitor_queue_sizes()["emails"] == {
        "ready": 0, "delayed": 6, "leased": 0, "dead": 0}
    emails.add("one more")
    assert emails.stats()["completed"] == 20

    with emails.lock("user:7") as token:
        with pytest.raises(LockNotAcquiredError), emails.lock("user:7", wait=0.0):
            pass  # held: another holder is told for how long (PTTL)
        # the holder locking again renews its lock (what a retried lock call does)
        assert emails.driver.run(lock_call(emails.keys.lock("user:7"), token, 5000)) is None
    [job] = emails.reserve()
    assert emails.release(job) == 1  # back to the front of ready, uncounted

    # flow control: priorities, groups and their limits, rate limit, max_active, pause
    flows = manager.register("flows", rate_limit=(2, 60.0), max_active=5, group_concurrency=1,
                             group_rate_limit=(5, 60.0))
    flows.add("vip", priority=5)
    flows.add_batch(["a1", "a2"], group="a")
    assert flows.pause_group("b") and flows.resume_group("b")
    assert flows.pause() and flows.is_paused() and flows.reserve() == []
    assert flows.resume() and not flows.is_paused()
    got = flows.reserve(count=10)  # group a, then the jobs of no group: its turn
    assert [j.payload for j in got] == ["a1", "vip"]
    assert flows.reserve(count=10) == []  # the rate limit's window is full
    assert flows.group_counts()["a"] == GroupCounts(ready=1, active=1)
    assert flows.ack(got) == 2

    # events and a result waited for: XADD in the scripts, XREVRANGE and XREAD to read them
    watched = manager.register("watched", events=True, keep_completed=60, store_results=True,
                               handler=lambda job: job.payload * 2)
    job_id = watched.add(21)
    watched.process(burst=True, install_signal_handlers=False)
    assert watched.result(job_id, timeout=5) == 42
    assert [e.kind for e in watched.events(since=0, block=False)] == [
        "added", "started", "completed"]
    assert list(watched.events(block=0.01)) == []  # from now: none came

    admin.script_flush()  # the next EVALSHA gets NOSCRIPT: EVAL with the source, as this user
    thumbs.add_batch(range(4))  # round robin over both partitions
    assert thumbs.counts()["ready"] == 4

    # a worker blocked on the wake lists (BLPOP) is woken by an add
    waiting = threading.Thread(target=thumbs.process, kwargs={
        "max_jobs": 5, "idle_wait": 3.0, "install_signal_handlers": False})
    waiting.start()

    def blocked() -> bool:  # it took the 4 jobs, ran them, and now waits in BLPOP
        return any(c["cmd"] == "blpop" and "b" in c["flags"] for c in admin.client_list())

    wait_until(blocked, 5, "the worker to block on its wake lists")
    thumbs.add("wake up")
    waiting.join(5)
    assert not waiting.is_alive()
    assert thumbs.stats()["completed"] == 5


def test_pyqcore_runs_end_to_end_as_an_acl_user_with_exactly_the_commands_it_needs(
    admin: redis.Redis, user_client: redis.Redis
) -> None:
    admin.config_resetstat()
    admin.acl_log_reset()
    run_everything(user_client, admin)
    used = set(command_calls(admin)) - NOT_PYQCORE
    assert used == set(PYQCORE_COMMANDS), (sorted(used - set(PYQCORE_COMMANDS)),
                                           sorted(set(PYQCORE_COMMANDS) - used))
    denied = {(e["username"], e["object"]) for e in admin.acl_log()}
    # the eviction-policy check (silently skipped) and redis-py's optional CLIENT SETINFO
    assert denied <= {(ACL_USERNAME, "config|get"), (ACL_USERNAME, "client|setinfo")}, denied
    assert (ACL_USERNAME, "config|get") in denied


def test_the_acl_user_is_refused_other_commands_and_keys(
    admin: redis.Redis, user_client: redis.Redis
) -> None:
    admin.set("other:key", "kept")
    for command in (("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory-policy"),
                    ("SCRIPT", "FLUSH"), ("ACL", "WHOAMI")):
        with pytest.raises(NoPermissionError):
            user_client.execute_command(*command)  # type: ignore[no-untyped-call]
    with pytest.raises(NoPermissionError):
        user_client.get("other:key")
    with pytest.raises(NoPermissionError):
        user_client.hset("other:hash", "f", "v")
    with pytest.raises(NoPermissionError):  # a key outside the pattern passed to a script
        user_client.eval("return redis.call('GET', KEYS[1])", 1, "other:key")
    with pytest.raises(ResponseError, match=r"can.t access"):  # ... or reached from inside one
        user_client.eval("return redis.call('GET', 'other:key')", 0)
    with pytest.raises(NoPermissionError):  # a queue under another prefix is refused too
        BaseQueue(user_client, name="q", prefix="other").add("x")
    assert admin.get("other:key") == b"kept"
    assert admin.keys("*") == [b"other:key"]


# -- TLS -------------------------------------------------------------------------------------


def make_certificates(folder: Path) -> None:
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True,
                       timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=pyqcore test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.cnf")


class TlsRedis(LocalRedis):
    """A LocalRedis that listens only on a TLS port (``--port 0``), and whose clients and URL
    verify its certificate against the test CA."""

    def __init__(self, certs: Path) -> None:
        port = free_port()
        super().__init__(
            "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(certs / "server.crt"),
            "--tls-key-file", str(certs / "server.key"), "--tls-ca-cert-file",
            str(certs / "ca.crt"), "--tls-auth-clients", "no", port=port)
        self.ca = certs / "ca.crt"

    @property
    def url(self) -> str:
        return (f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                f"&ssl_ca_certs={self.ca}")

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI is missing")
def test_pyqcore_runs_over_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    if reason := tls_unsupported():  # only a build without TLS skips: any other failure fails
        pytest.skip(f"this redis-server was built without TLS: {reason}")
    make_certificates(tmp_path)
    with TlsRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        queue = BaseQueue(client, name="tls", handler=lambda job: None)
        queue.add_batch(range(10))
        jobs = queue.reserve(count=3)
        assert [j.payload for j in jobs] == [0, 1, 2]
        assert queue.ack(jobs) == 3
        report = queue.process(burst=True, install_signal_handlers=False)
        assert report.acked == 7
        assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
        # the connection really is TLS, and a client that does not trust the CA is refused
        assert client.connection_pool.connection_class is redis.SSLConnection
        with pytest.raises(redis.ConnectionError, match=r"(?i)certificate"):
            redis.Redis.from_url(f"rediss://127.0.0.1:{server.port}/0").ping()
        plain = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.5,
                            retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.ConnectionError):  # nor does it speak plain TCP
            plain.ping()
        client.close()
