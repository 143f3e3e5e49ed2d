"""A throwaway Sentinel deployment for the tests: ``LocalSentinelGroup`` starts a primary, a
replica and three ``redis-sentinel`` processes (Debian's ``redis-sentinel`` package) on free
loopback ports, with short failure detection (``down-after-milliseconds`` 1 s) and failover
timeout (3 s), so a failover completes in a few seconds. Every process is a ``LocalRedis``
(``tests.support.servers``), so the session's leak check sees and kills any left running.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from types import TracebackType
from typing import Any

import redis
import redis.asyncio.sentinel
import redis.sentinel

from tests.support.servers import (
    LocalRedis,
    free_ports,
    redis_binary,
    replica_in_sync,
    wait_until,
    with_pdeathsig,
)

SERVICE = "pyqcore"  # the name the sentinels monitor the primary under


class LocalSentinel(LocalRedis):
    """One ``redis-sentinel`` monitoring ``service`` at ``primary_port`` (quorum ``quorum``).
    Its config file lives in its directory: Sentinel rewrites it as it learns the deployment."""

    def __init__(self, service: str, primary_port: int, *, quorum: int, down_after_ms: int,
                 failover_timeout_ms: int, port: int, startup_timeout: float,
                 password: str | None = None, sentinel_password: str | None = None) -> None:
        super().__init__("sentinel", service, port=port, startup_timeout=startup_timeout)
        self.password = sentinel_password
        self.config = self.dir / "sentinel.conf"
        lines = [f"port {port}", "bind 127.0.0.1", f"dir {self.dir}",
                 f"logfile {self.dir / 'redis.log'}",
                 f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}",
                 f"sentinel down-after-milliseconds {service} {down_after_ms}",
                 f"sentinel failover-timeout {service} {failover_timeout_ms}",
                 f"sentinel parallel-syncs {service} 1"]
        if password:  # what it needs to talk to the primary and the replicas
            lines.append(f"sentinel auth-pass {service} {password}")
        if sentinel_password:  # what clients and the other sentinels need to talk to it
            lines += [f"requirepass {sentinel_password}", f"sentinel sentinel-pass "
                      f"{sentinel_password}"]
        self.config.write_text("\n".join(lines) + "\n")

    def client(self, **kwargs: object) -> redis.Redis:
        """A new client of this sentinel (with its password, if it requires one)."""
        return super().client(**{"password": self.password, **kwargs})

    def command(self) -> list[str]:
        """``redis-sentinel <its config file>``, under ``with_pdeathsig``."""
        return with_pdeathsig([redis_binary("redis-sentinel"), str(self.config)])


class LocalSentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels monitoring the primary as
    ``service``; a context manager. ``start`` returns once the replicas are in sync and every
    sentinel knows the others and the replicas (so a failover can be agreed on at once).

    ``client()`` is a Sentinel-managed client of the primary (redis-py's ``master_for``), and
    ``url`` the same deployment as pyqcore's ``redis+sentinel://`` URL. ``kill_primary`` and
    ``wait_for_failover`` stage a crash: SIGKILL the primary, then wait until every live
    sentinel names a promoted replica that says it is the primary."""

    def __init__(self, *, replicas: int = 1, sentinels: int = 3, service: str = SERVICE,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 password: str | None = None, sentinel_password: str | None = None,
                 startup_timeout: float = 20.0) -> None:
        self.service = service
        self.password = password  # the servers' requirepass (and the replicas' masterauth)
        self.sentinel_password = sentinel_password  # the sentinels' requirepass
        self.startup_timeout = startup_timeout
        ports = free_ports(1 + replicas + sentinels)
        primary_port = ports[0]
        # A replica's first sync is diskless, and would wait 5 s (the default delay) for more
        # replicas to join it: a local deployment has nothing to wait for.
        common = ["--repl-diskless-sync-delay", "0"]
        if password:
            common += ["--masterauth", password]
        self.servers = [LocalRedis(*common, port=primary_port, startup_timeout=startup_timeout,
                                   password=password)]
        self.servers += [LocalRedis(*common, "--replicaof", "127.0.0.1", str(primary_port),
                                    port=port, startup_timeout=startup_timeout,
                                    password=password)
                         for port in ports[1:1 + replicas]]
        self.sentinels = [
            LocalSentinel(service, primary_port, quorum=sentinels // 2 + 1,
                          down_after_ms=down_after_ms, failover_timeout_ms=failover_timeout_ms,
                          port=port, startup_timeout=startup_timeout, password=password,
                          sentinel_password=sentinel_password)
            for port in ports[1 + replicas:]]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel: what ``redis.sentinel.Sentinel`` takes."""
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://[:password@]127.0.0.1:<port>,.../<service>/0``, with
        ``?sentinel_password=`` if the sentinels require one."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.addresses)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.service}/0{query}"

    def _sentinel_kwargs(self) -> dict[str, Any]:
        return {"socket_timeout": 1.0, "password": self.sentinel_password}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of the current primary, found through the sentinels (it follows a
        failover by itself). ``kwargs`` are the primary's connection options."""
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            self.addresses, sentinel_kwargs=self._sentinel_kwargs())
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            self.service, **{"password": self.password, **kwargs})
        return client

    def async_client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """A new ``redis.asyncio`` client of the current primary, through the sentinels."""
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            self.addresses, sentinel_kwargs=self._sentinel_kwargs())
        client: redis.asyncio.Redis = sentinel.master_for(
            self.service, **{"password": self.password, **kwargs})
        return client

    def start(self) -> LocalSentinelGroup:
        """Boot the servers, wait for the replicas' first sync, then boot the sentinels and wait
        until each knows the others and the replicas; on failure stop what was started."""
        try:
            for server in self.servers:
                server.launch()
            for server in self.servers:
                server.wait_ready()
            for replica in self.servers[1:]:
                wait_until(partial(replica_in_sync, replica), self.startup_timeout,
                           "a replica did not sync with the primary", replica)
            for sentinel in self.sentinels:
                sentinel.launch()
            for sentinel in self.sentinels:
                sentinel.wait_ready()
                wait_until(partial(self._sees_everyone, sentinel), self.startup_timeout,
                           "a sentinel did not discover the others and the replicas", sentinel)
        except BaseException:
            self.close()
            raise
        return self

    def _sees_everyone(self, sentinel: LocalSentinel) -> bool:
        """Whether ``sentinel`` knows every other sentinel and every replica."""
        state = _ask(sentinel, "SENTINEL", "MASTER", self.service)
        return (int(state["num-other-sentinels"]) == len(self.sentinels) - 1
                and int(state["num-slaves"]) == len(self.servers) - 1)

    @property
    def alive(self) -> list[LocalRedis]:
        """The servers (not sentinels) whose process runs."""
        return [server for server in self.servers if server.running]

    def server_at(self, port: int) -> LocalRedis:
        """The server listening on ``port``."""
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(f"no server of this group listens on port {port}")

    def primary(self) -> LocalRedis:
        """The server the first live sentinel names as the primary."""
        sentinel = next(s for s in self.sentinels if s.running)
        _, port = _ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return self.server_at(int(port))

    def kill_primary(self) -> LocalRedis:
        """SIGKILL the primary, as a crash would; returns it (its directory kept until
        ``close``)."""
        victim = self.primary()
        victim.stop(kill=True)
        return victim

    def wait_for_failover(self, dead: LocalRedis, timeout: float = 20.0) -> LocalRedis:
        """Wait until every live sentinel names the same live server other than ``dead`` as
        the primary, and that server says it is one (``role:master``); returns it."""
        promoted: list[LocalRedis] = []

        def failed_over() -> bool:
            try:
                named = {int(_ask(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])
                         for s in self.sentinels if s.running}
                if len(named) != 1 or dead.port in named:
                    return False
                server = self.server_at(named.pop())
                if not server.running or _role(server) != "master":
                    return False
            except redis.RedisError:  # a server busy or switching roles: ask again
                return False
            promoted[:] = [server]
            return True

        wait_until(failed_over, timeout, f"no replica was promoted after port {dead.port} died",
                   self.sentinels[0])
        return promoted[0]

    def close(self) -> None:
        """Stop every sentinel and server and delete their directories (every one, even if one
        fails)."""
        with ExitStack() as stack:
            for process in [*self.servers, *self.sentinels]:
                stack.callback(process.close)

    def __enter__(self) -> LocalSentinelGroup:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _ask(server: LocalRedis, *command: str) -> Any:
    """One command's reply from ``server``, decoded to str, on a short-lived connection."""
    probe = server.client(socket_timeout=1.0, decode_responses=True)
    try:
        reply = probe.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        probe.close()
    return reply


def _role(server: LocalRedis) -> str:
    """What ``server`` says it is: ``master`` or ``slave``."""
    probe = server.client(socket_timeout=1.0)
    try:
        return str(probe.info("replication")["role"])
    finally:
        probe.close()
