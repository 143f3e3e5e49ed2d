"""Throwaway Redis deployments on free loopback ports, for the demo, the tests and the bench:
``LocalRedis`` (one ``redis-server``) and ``LocalRedisCluster`` (a Redis Cluster of primaries,
optionally with replicas, and a staged failover).

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
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

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
    """A Redis Cluster of ``primaries`` primaries, each with ``replicas`` replicas (none by
    default), on free loopback ports, built with ``redis-cli --cluster create``; a context
    manager. Every node is a ``LocalRedis`` in cluster mode, with its cluster bus on a second
    free port (not port + 10000, which may be taken or beyond 65535).

    With replicas, ``start`` also waits until every replica's link to its primary is up, and
    ``kill_primary_of`` / ``wait_for_failover`` stage a crash: SIGKILL the primary serving a
    key, then wait until its replica has been promoted and the cluster is whole again. The
    cluster node timeout (how long a silent primary takes to be declared failed) is 5 s without
    replicas and 1 s with them, so a failover completes in a few seconds."""

    def __init__(self, primaries: int = 3, *extra: str, replicas: int = 0,
                 node_timeout_ms: int | None = None, startup_timeout: float = 20.0):
        if primaries < 1 or replicas < 0 or (primaries < 3 and replicas):
            raise ConfigurationError(f"cannot build {primaries} primaries with {replicas} "
                                     "replicas each (replicas need 3 or more primaries)")
        self.startup_timeout = startup_timeout
        self.replicas = replicas
        if node_timeout_ms is None:
            node_timeout_ms = 1000 if replicas else 5000
        count = primaries * (1 + replicas)
        ports = free_ports(2 * count)
        # A replica's first sync is diskless, and would wait 5 s (the default delay) for
        # more replicas to join it: a local cluster has nothing to wait for.
        replication = ("--repl-diskless-sync-delay", "0") if replicas else ()
        self._bus_ports = ports[count:]
        self.nodes = [
            LocalRedis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(bus), "--cluster-node-timeout",
                       str(node_timeout_ms), *replication, *extra,
                       port=port, startup_timeout=startup_timeout)
            for port, bus in zip(ports[:count], ports[count:], strict=True)
        ]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` of the first live node: ``RedisCluster.from_url``
        finds the rest (before ``start``: the first node's)."""
        return (self.alive or self.nodes)[0].url

    @property
    def ports(self) -> list[int]:
        """The client port of every node."""
        return [node.port for node in self.nodes]

    def client(self, **kwargs: Any) -> RedisCluster:
        """A new cluster client (it discovers every node and the slot map from the first live
        node, or the next if that one fails: a killed primary is skipped)."""
        startup = [ClusterNode("127.0.0.1", node.port)  # type: ignore[no-untyped-call]
                   for node in self.alive or self.nodes]
        return RedisCluster(startup_nodes=startup, **kwargs)

    def start(self) -> LocalRedisCluster:
        """Boot every node at once, assign the slots, and wait until every node reports
        ``cluster_state:ok``; on failure stop what was started."""
        try:
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                node.wait_ready()
            if len(self.nodes) < 3:
                self._create_by_hand()
            else:
                self._create()
            for node in self.nodes:
                wait_until(partial(_cluster_ok, node), self.startup_timeout,
                           "the cluster did not reach cluster_state:ok", node)
            if self.replicas:
                self._wait_replicas_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _create(self) -> None:
        """Assign slots and replicas with ``redis-cli --cluster create`` (3+ primaries)."""
        created = subprocess.run(
            [redis_binary("redis-cli"), "--cluster", "create",
             *(f"127.0.0.1:{port}" for port in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=self.startup_timeout, check=False)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}"
                               f"{created.stderr}")

    def _create_by_hand(self) -> None:
        """Split the slots evenly over 1 or 2 primaries and introduce them to each other
        (``redis-cli --cluster create`` refuses fewer than 3)."""
        bounds = [16384 * i // len(self.nodes) for i in range(len(self.nodes) + 1)]
        for node, low, high in zip(self.nodes, bounds, bounds[1:], strict=False):
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high - 1)
        with self.nodes[0].client() as first:
            for node, bus in zip(self.nodes[1:], self._bus_ports[1:], strict=True):
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus)

    def close(self) -> None:
        """Stop every node and delete their directories."""
        for node in self.nodes:
            node.close()

    # -- replicas and failover -------------------------------------------------------------

    @property
    def alive(self) -> list[LocalRedis]:
        """The nodes whose process runs (every node, until one is killed)."""
        return [node for node in self.nodes
                if node.process is not None and node.process.poll() is None]

    def node_at(self, port: int) -> LocalRedis:
        """The node listening on ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster listens on port {port}")

    def topology(self) -> dict[int, dict[str, Any]]:
        """``CLUSTER NODES`` as the first live node sees it, by client port: each entry has
        ``flags`` (e.g. ``"master"``, ``"slave"``, ``"master,fail"``), ``master_id``,
        ``node_id`` and ``slots`` (``[[start, end], ...]`` as strings)."""
        return _cluster_nodes(self.alive[0])

    def primaries(self) -> list[LocalRedis]:
        """The live nodes that serve slots right now, as the first live node sees it."""
        return [self.node_at(port) for port, info in self.topology().items()
                if _serves_slots(info) and port in {n.port for n in self.alive}]

    def replicas_of(self, primary: LocalRedis) -> list[LocalRedis]:
        """The nodes replicating ``primary``, as the first live node sees it."""
        nodes = self.topology()
        primary_id = nodes[primary.port]["node_id"]
        return [self.node_at(port) for port, info in nodes.items()
                if info["master_id"] == primary_id]

    def primary_of_slot(self, slot: int) -> LocalRedis:
        """The node serving ``slot``, as the first live node sees it."""
        port = _slot_owner(_cluster_nodes(self.alive[0]), slot)
        if port is None:
            raise RuntimeError(f"no node serves slot {slot}")
        return self.node_at(port)

    def primary_of(self, key: str | bytes) -> LocalRedis:
        """The node serving ``key``'s slot (its hash tag's, if it has one)."""
        return self.primary_of_slot(key_slot(key.encode() if isinstance(key, str) else key))

    def kill_primary_of(self, key: str | bytes) -> LocalRedis:
        """SIGKILL the primary serving ``key``'s slot, as a crash would; returns it (stopped,
        its directory kept until ``close``)."""
        victim = self.primary_of(key)
        victim.stop(kill=True)
        return victim

    def wait_for_failover(self, slot: int, dead: LocalRedis,
                          timeout: float = 30.0) -> LocalRedis:
        """Wait until every live node reports ``cluster_state:ok`` and agrees that ``slot`` is
        served by a live node other than ``dead`` (its promoted replica); returns that node."""
        new_owner: list[LocalRedis] = []

        def failed_over() -> bool:
            owners: set[int | None] = set()
            for node in self.alive:
                try:
                    if not _cluster_ok(node):
                        return False
                    owners.add(_slot_owner(_cluster_nodes(node), slot))
                except redis.RedisError:  # a node busy or restarting: ask again
                    return False
            if len(owners) != 1 or None in owners or dead.port in owners:
                return False
            port = owners.pop()
            assert port is not None
            new_owner[:] = [self.node_at(port)]
            return True

        wait_until(failed_over, timeout, f"slot {slot} was not failed over from port "
                   f"{dead.port}", self.alive[0])
        return new_owner[0]

    def _wait_replicas_ready(self) -> None:
        """Wait until every node sees ``primaries x (1 + replicas)`` nodes in their roles, and
        every replica's link to its primary is up (its first sync is done)."""
        expected = len(self.nodes) // (1 + self.replicas)

        def roles_settled() -> bool:
            for node in self.nodes:
                nodes = _cluster_nodes(node)
                serving = [info for info in nodes.values() if _serves_slots(info)]
                following = [info for info in nodes.values() if "slave" in info["flags"]]
                if len(serving) != expected or len(following) != len(self.nodes) - expected:
                    return False
            return True

        wait_until(roles_settled, self.startup_timeout,
                   "the replicas did not join their primaries", self.nodes[0])
        for node in self.nodes:
            if "slave" in _cluster_nodes(node)[node.port]["flags"]:
                wait_until(partial(_replica_in_sync, node), self.startup_timeout,
                           "a replica did not sync with its primary", node)

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


def _cluster_nodes(node: LocalRedis) -> dict[int, dict[str, Any]]:
    """``CLUSTER NODES`` as ``node`` sees it, by client port (see ``LocalRedisCluster.topology``).
    """
    probe = node.client(socket_timeout=1.0)
    try:
        # redis-py parses the reply into {"host:port": {"flags": ..., "slots": ...}}
        parsed = probe.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
    finally:
        probe.close()
    return {int(address.rsplit(":", 1)[1]): info for address, info in parsed.items()}


def _serves_slots(info: dict[str, Any]) -> bool:
    """Whether a ``CLUSTER NODES`` entry is a primary that is not failed and owns slots."""
    flags = set(info["flags"].split(","))
    return "master" in flags and not flags & {"fail", "fail?"} and bool(info["slots"])


def _slot_owner(nodes: dict[int, dict[str, Any]], slot: int) -> int | None:
    """The port of the healthy primary serving ``slot`` in a ``CLUSTER NODES`` view."""
    for port, info in nodes.items():
        if _serves_slots(info) and any(int(r[0]) <= slot <= int(r[-1]) for r in info["slots"]):
            return port
    return None


def _replica_in_sync(node: LocalRedis) -> bool:
    """Whether replica ``node``'s link to its primary is up (``master_link_status:up``)."""
    probe = node.client(socket_timeout=1.0)
    try:
        info = probe.info("replication")
    finally:
        probe.close()
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")
