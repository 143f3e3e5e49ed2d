"""A throwaway ``redis-server`` for ``pyqcore demo``: started on a free loopback port in a temp
directory of its own, stopped (and the directory deleted) on exit. It never touches a Redis it
did not start. The tests' and benchmarks' servers (clusters, replicas, failover) build on it in
``tests/support``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import redis

from pyqcore.errors import ConfigurationError

_Server = TypeVar("_Server", bound="LocalRedis")


def redis_binary(name: str) -> str:
    """Path of ``redis-server`` (or ``redis-cli``), or ConfigurationError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise ConfigurationError(f"{name} was not found on PATH. Install it (Debian/Ubuntu: "
                                 "`sudo apt-get install redis-server`), or set "
                                 "PYQCORE_REDIS_URL to a Redis URL.")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """redis-server with ``extra`` config arguments and no persistence unless they ask; a
    context manager. ``start`` leaves no process behind when it fails."""

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

    @property
    def running(self) -> bool:
        """Whether the process this object started runs."""
        return self.process is not None and self.process.poll() is None

    def start(self: _Server) -> _Server:
        """Start the server and wait until it answers; if it does not, kill it and raise
        RuntimeError with its log (the directory stays, for ``close``)."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop(kill=True)
            raise
        return self

    def launch(self) -> None:
        """Start the process without waiting for it (so several servers can boot at once). Its
        stdout and stderr (config errors) go to its log. RuntimeError if it already runs."""
        if self.running:
            raise RuntimeError(f"redis-server already runs on port {self.port}")
        with (self.dir / "redis.log").open("ab") as output:
            self.process = subprocess.Popen(self.command(), stdout=output, stderr=output)

    def command(self) -> list[str]:
        """The command line: no persistence unless ``extra`` asks."""
        return [redis_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]

    def wait_ready(self) -> None:
        """Wait until the launched server answers PING; RuntimeError with its log if it exits
        or stays silent for ``startup_timeout`` seconds."""
        probe = self.client(socket_timeout=1.0)

        def answers() -> bool:
            if not self.running:
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
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with ``kill``, as a crash would; SIGKILL too if SIGTERM has
        not stopped it in 10 s, e.g. a SIGSTOPped server); keeps its directory."""
        process, self.process = self.process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self: _Server) -> _Server:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
