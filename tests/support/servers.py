"""Throwaway Redis deployments for the tests and the benchmarks, on free loopback ports:
``LocalRedis`` (one ``redis-server``, the package's throwaway server that also registers its
process for the session's leak check) and ``LocalRedisCluster`` (a Redis Cluster of primaries,
optionally with replicas, and a staged failover).

They never touch a Redis they did not start: each server picks its own ports and its own temp
directory, and stops (and deletes) both on exit. ``reap_leftover_servers`` finds, kills and
names every server this process started that still runs (``tests/conftest.py`` fails the run
on any).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from pyqcore import local_redis
from pyqcore.errors import ConfigurationError
from pyqcore.local_redis import free_port, redis_binary, wait_until

__all__ = ["SETPRIV", "LocalRedis", "LocalRedisCluster", "free_port", "free_ports",
           "reap_leftover_servers", "redis_binary", "replica_in_sync", "tls_unsupported",
           "wait_until", "with_pdeathsig"]

# The process names (comm) of the servers the tests start.
SERVER_NAMES = ("redis-server", "redis-sentinel")
# Every redis-server process a LocalRedis of this process launched, with its LocalRedis.
_LAUNCHED: list[tuple[subprocess.Popen[bytes], LocalRedis]] = []


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now (all bound
    at once, so no two are the same)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


# Linux's util-linux (Essential in Debian): sets the parent-death signal, then runs the command.
SETPRIV = shutil.which("setpriv")


def with_pdeathsig(command: list[str]) -> list[str]:
    """``command`` run under ``setpriv --pdeathsig KILL`` when launched from the main thread: if
    the test process dies without cleaning up (SIGKILL, a timeout's SIGTERM), the kernel kills
    the server too. Not from another thread: the signal fires when the launching thread ends,
    which would kill a server still in use."""
    if SETPRIV and threading.current_thread() is threading.main_thread():
        return [SETPRIV, "--pdeathsig", "KILL", "--", *command]
    return command


class LocalRedis(local_redis.LocalRedis):
    """The package's throwaway redis-server (``pyqcore.local_redis``), whose every launched
    process is registered for ``reap_leftover_servers``, and dies with the process that
    started it. With ``password`` it requires one (``requirepass``), and its own clients (the
    readiness probe, ``client()``) give it."""

    def __init__(self, *extra: str, port: int | None = None, startup_timeout: float = 10.0,
                 password: str | None = None) -> None:
        super().__init__(*extra, *(("--requirepass", password) if password else ()), port=port,
                         startup_timeout=startup_timeout)
        self.password = password

    def client(self, **kwargs: object) -> redis.Redis:
        """A new client of this server (with its password, if it requires one)."""
        return super().client(**{"password": self.password, **kwargs})

    def command(self) -> list[str]:
        """The server's command line, under ``with_pdeathsig``."""
        return with_pdeathsig(super().command())

    def launch(self) -> None:
        super().launch()
        assert self.process is not None
        _LAUNCHED.append((self.process, self))


def _redis_server_children() -> Iterator[tuple[int, str]]:
    """The pid and name of each running redis-server and redis-sentinel process whose parent is
    this process (Linux /proc; none elsewhere)."""
    me = str(os.getpid())
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            name = (entry / "comm").read_text().strip()
        except OSError:  # gone meanwhile
            continue
        if fields[1] == me and fields[0] != "Z" and name.startswith(SERVER_NAMES):
            yield int(entry.name), name


def reap_leftover_servers() -> list[str]:
    """Kill (SIGKILL) every redis-server (or redis-sentinel) this process started that still
    runs: those a ``LocalRedis`` launched (their directory is deleted too), and any other child
    redis-server or redis-sentinel (e.g. one started with the package's class directly).
    Returns a description of each; an empty list if none was left."""
    leftovers = []
    for process, server in _LAUNCHED:
        if process.poll() is None:
            process.kill()
            process.wait()
            shutil.rmtree(server.dir, ignore_errors=True)
            leftovers.append(f"pid {process.pid}: {type(server).__name__} on port {server.port}"
                             f" (args: {' '.join(server.extra) or '-'})")
    _LAUNCHED.clear()
    for pid, name in _redis_server_children():
        os.kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):  # reaped by its Popen meanwhile
            os.waitpid(pid, 0)
        leftovers.append(f"pid {pid}: a {name} started without tests.support.LocalRedis")
    return leftovers


def tls_unsupported() -> str | None:
    """Why this redis-server build cannot serve TLS, in its own words; None if it can.

    Starts it with a TLS port and no certificate. A build with TLS refuses to run without one
    ("No tls-cert-file configured!"); a build without TLS rejects the directive as unknown
    (Redis 6 to 7.0: the tls-* directives exist only in a TLS build) or says so (7.2 and later).
    Any other answer counts as TLS support, so a real failure (a bad certificate, a port in
    use) fails the test that needs TLS instead of reading as a skip."""
    with tempfile.TemporaryDirectory(prefix="pyqcore-tls-probe-") as folder:
        try:
            probe = subprocess.run(
                [redis_binary("redis-server"), "--port", "0", "--tls-port", str(free_port()),
                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder,
                 "--logfile", ""],
                capture_output=True, text=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:  # it ran (and was killed): it took the TLS port
            return None
    output = (probe.stdout + probe.stderr).strip()
    unknown_directive = "Bad directive" in output and "'tls-port" in output
    if probe.returncode != 0 and (unknown_directive or "Failed finding TLS support" in output):
        return output
    return None


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
        """Stop every node and delete their directories (every one, even if one fails)."""
        with ExitStack() as stack:
            for node in self.nodes:
                stack.callback(node.close)

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
                wait_until(partial(replica_in_sync, node), self.startup_timeout,
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


def replica_in_sync(node: LocalRedis) -> bool:
    """Whether replica ``node``'s link to its primary is up (``master_link_status:up``)."""
    probe = node.client(socket_timeout=1.0)
    try:
        info = probe.info("replication")
    finally:
        probe.close()
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")
