"""A throwaway ``redis-server`` on a free loopback port, for the demo, the tests and the bench.

It never touches a Redis it did not start: it picks its own port, its own temp directory, and
stops (and deletes) both on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from pyqcore.errors import ConfigurationError

INSTALL_HINT = ("redis-server was not found on PATH. Install it (Debian/Ubuntu: "
                "`sudo apt-get install redis-server`), or set PYQCORE_REDIS_URL to a Redis URL.")


def redis_server_binary() -> str:
    """Path of redis-server, or ConfigurationError saying how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise ConfigurationError(INSTALL_HINT)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), *self.extra]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        probe = self.client(socket_timeout=1.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not answer: {self.log_tail()}")\
                            from None
                    time.sleep(0.02)
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
