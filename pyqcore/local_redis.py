"""Throwaway Redis deployments on free loopback ports, for the demo, the tests and the bench:
``LocalRedis`` (one ``redis-server``) and ``LocalRedisCluster`` (a Redis Cluster of primaries).

They never touch a Redis they did not start: each server picks its own ports and its own temp
directory, and stops (and deletes) both on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.cluster import RedisCluster

from pyqcore.errors import ConfigurationError

INSTALL_HINT = ("{binary} was not found on PATH. Install it (Debian/Ubuntu: "
                "`sudo apt-get install redis-server`), or set PYQCORE_REDIS_URL to a Redis URL.")


def redis_binary(name: str) -> str:
    """Path of ``redis-server`` (or ``redis-cli``), or ConfigurationError saying how to install
    it."""
    path = shutil.which(name)
    if path is None:
        raise ConfigurationError(INSTALL_HINT.format(binary=name))
    return path


def redis_server_binary() -> str:
    """Path of redis-server, or ConfigurationError saying how to install it."""
    return redis_binary("redis-server")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all bound
    at once, so no two are the same)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               server: LocalRedis | None = None) -> None:
    """Poll ``condition`` (it may raise to give up early) until true; after ``timeout`` seconds
    raise RuntimeError saying ``what`` did not happen, with the server's log if given."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {server.log_tail() if server else ''}")
        time.sleep(0.02)


class LocalRedis:
    """Starts redis-server with ``extra`` config arguments; a context manager."""

    def __init__(self, *extra: str, port: int | None = None, startup_timeout: float = 10.0):
        self.extra = extra
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="pyqcore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A new client of this server."""
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)  # type: ignore[arg-type]

    def start(self) -> LocalRedis:
        """Start the server (no persistence unless ``extra`` asks) and wait until it answers."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the process without waiting for it, so several servers can boot at once."""
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        """Wait until the launched server answers PING; RuntimeError with its log if it exits
        or stays silent for ``startup_timeout`` seconds."""
        probe = self.client(socket_timeout=1.0)

        def answers() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
            try:
                return bool(probe.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, self.startup_timeout, "redis-server did not answer", self)
        finally:
            probe.close()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        log = self.dir / "redis.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else ""

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``, as a crash would); keeps its directory."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class LocalRedisCluster:
    """A Redis Cluster of ``primaries`` primaries (no replicas) on free loopback ports, built
    with ``redis-cli --cluster create``; a context manager. Every node is a ``LocalRedis`` in
    cluster mode, with its cluster bus on a second free port (not port + 10000, which may be
    taken or beyond 65535)."""

    def __init__(self, primaries: int = 3, *extra: str, startup_timeout: float = 20.0):
        if primaries < 3:
            raise ConfigurationError("redis-cli --cluster create needs at least 3 primaries")
        self.startup_timeout = startup_timeout
        ports = free_ports(2 * primaries)
        self.nodes = [
            LocalRedis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(bus), "--cluster-node-timeout", "5000", *extra,
                       port=port, startup_timeout=startup_timeout)
            for port, bus in zip(ports[:primaries], ports[primaries:], strict=True)
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` of the first node: ``RedisCluster.from_url`` finds
        the rest."""
        return self.nodes[0].url

    @property
    def ports(self) -> list[int]:
        """The client port of every node."""
        return [node.port for node in self.nodes]

    def client(self, **kwargs: Any) -> RedisCluster:
        """A new cluster client (it discovers every node and the slot map from the first)."""
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port, **kwargs)

    def start(self) -> LocalRedisCluster:
        """Boot every node at once, assign the slots, and wait until every node reports
        ``cluster_state:ok``; on failure stop what was started."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
            created = subprocess.run(
                [redis_binary("redis-cli"), "--cluster", "create",
                 *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=self.startup_timeout, check=False)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                                   f"{created.stderr}")
            for node in self.nodes:
                wait_until(partial(_cluster_ok, node), self.startup_timeout,
                           "the cluster did not reach cluster_state:ok", node)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _cluster_ok(node: LocalRedis) -> bool:
    """Whether ``node`` sees every slot served (``CLUSTER INFO`` says ``cluster_state:ok``)."""
    probe = node.client(socket_timeout=1.0)
    try:
        # redis-py parses the reply into a dict of str
        info = probe.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    finally:
        probe.close()
    return bool(info.get("cluster_state") == "ok")
