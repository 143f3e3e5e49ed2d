"""Running an application's workers: in this process (``serve``), or in N worker processes
that a supervisor keeps running (``run_processes``; ``pyqcore worker APP --processes N``).

Why processes: a worker's slots are threads, and threads share the GIL, so one process runs
about one core's worth of Python handlers. N processes of the same app use N cores.

**Each child is a subprocess running ``python -m pyqcore worker APP ... --parent-pid PID``**,
not a ``multiprocessing.Process``:

- a child is exactly the command an operator runs by hand: it imports the app by its
  ``module:attribute`` name from the same working directory and handles signals and errors the
  same way. Nothing is pickled, and the supervisor's own ``__main__`` is never re-imported (the
  spawn and forkserver contexts re-import it, which goes wrong under pytest, a REPL or a
  console-script wrapper). ``fork`` is not an option: a forked child inherits the parent's
  threads' locks and its Redis connections.
- every child runs in a session of its own (``start_new_session``), so a Ctrl-C in the
  terminal reaches only the supervisor, which forwards exactly one SIGTERM to each child. (A
  pyqcore worker stops gracefully on its first signal and acts on a second one at once: had
  the terminal's SIGINT and the forwarded SIGTERM both reached a child, it would have died
  with jobs in flight.)
- SIGTERM and SIGINT are blocked in a child from before ``exec`` (the signal mask survives
  it) until its worker has installed its handlers (``serve``): a stop that arrives while a
  child starts is held, then honoured gracefully, instead of killing the half-started child.
- a child checks every second that its supervisor is still its parent; if the supervisor
  is gone (SIGKILLed), the child stops gracefully too: no orphan goes on unsupervised.

**Restarts.** A child that exits with a non-zero status (or is killed by a signal) while
the supervisor is not stopping is started again after a delay that doubles with each
consecutive crash of that child, from ``restart_delay`` (0.5 s) to ``max_restart_delay``
(30 s); a run of ``stable_after`` seconds (10) resets it. A crash loop thus costs one start
every 30 s, not a spinning CPU. A child that exits with status 0 by itself (``--burst``: its
queues are drained) is not restarted.

**Stopping.** The first SIGTERM/SIGINT (or ``Supervisor.stop()``) sends SIGTERM to every
child: each finishes its in-flight jobs, acks them and gives the rest of its batch back, then
exits. The supervisor waits for all of them, however long their jobs take. A second signal
sends SIGKILL to every child still running (their leased jobs come back after the visibility
timeout, counted as an attempt). The supervisor's exit status is 0 if the last run of every
child ended with status 0, else 1.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import redis

from pyqcore.core.slot import WorkerReport
from pyqcore.core.worker import may_install_signal_handlers
from pyqcore.errors import ConfigurationError, UnknownQueueError
from pyqcore.sync.manager import QueueManager
from pyqcore.sync.worker import Worker, run_in_threads, stop_on_signals

log = logging.getLogger("pyqcore.supervisor")

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
PARENT_CHECK_INTERVAL = 1.0  # seconds between a child's checks that its supervisor lives


# -- the app ---------------------------------------------------------------------------------


def load_manager(app: str) -> QueueManager:
    """Import ``module:attribute`` (``attribute`` defaults to ``manager``) from the current
    directory or sys.path; ConfigurationError unless it names a ``pyqcore.QueueManager``."""
    module_name, _, attribute = app.partition(":")
    attribute = attribute or "manager"
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")) or \
            not all(part.isidentifier() for part in attribute.split(".")):
        raise ConfigurationError(f"{app!r} is not of the form module:attribute "
                                 "(e.g. myapp.jobs:manager)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigurationError(f"cannot import {module_name!r} (from {app!r}): no module "
                                     f"named {exc.name!r}") from exc
        raise ConfigurationError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the app's own code failed at import: name the app and the error
        raise ConfigurationError(f"importing {module_name!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigurationError(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not isinstance(found, QueueManager):
        raise ConfigurationError(f"{module_name}:{attribute} is a {type(found).__name__}, not "
                                 "a pyqcore.QueueManager")
    return found


def select_queues(manager: QueueManager, names: Sequence[str] = (), app: str = "the app"
                  ) -> list[str]:
    """The queues a worker of ``manager`` runs: ``names``, or every registered queue with a
    handler. UnknownQueueError for a name that is not registered (listing the known ones),
    ConfigurationError for one without a handler or when there is nothing to run."""
    registered = manager.queues
    if not names:
        chosen = [name for name, queue in registered.items() if queue.has_handler]
        if not chosen:
            raise ConfigurationError(f"no queue registered by {app} has a handler to process "
                                     "jobs with")
        return chosen
    for name in names:
        if name in registered:
            if not registered[name].has_handler:
                raise ConfigurationError(f"queue {name!r} of {app} has no handler")
            continue
        try:
            known = manager.known_queue_names()
        except redis.RedisError:  # the listing is a courtesy: the error is the name
            known = sorted(registered)
        listed = ", ".join(known) or "none"
        if name in known:
            raise UnknownQueueError(f"queue {name!r} is not registered by {app} (registered: "
                                    f"{', '.join(sorted(registered)) or 'none'})")
        raise UnknownQueueError(f"unknown queue {name!r} (known: {listed})")
    return list(dict.fromkeys(names))


def default_concurrency(processes: int = 1) -> int:
    """Slots per worker process: about one per core over all processes (README, "The
    worker": slots share the GIL, so more only pay off when handlers wait on I/O)."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


# -- one process -----------------------------------------------------------------------------


def serve(manager: QueueManager, queues: Sequence[str] = (), *,
          concurrency: int | None = None, burst: bool = False, schedules: bool = False,
          app: str = "the app", parent_pid: int | None = None,
          install_signal_handlers: bool = True, stop: threading.Event | None = None,
          metrics_port: int | None = None, metrics_host: str = "127.0.0.1"
          ) -> dict[str, WorkerReport]:
    """Run a worker for each of ``queues`` (default: every registered queue with a handler),
    each in its own thread, until SIGTERM/SIGINT, ``stop``, or (``burst``) until drained;
    with ``schedules``, each also adds the due runs of its queue's schedules.
    With ``parent_pid``, also stop (gracefully) when that process is no longer the parent.
    With ``metrics_port``, their worker metrics are served there (``pyqcore.worker_metrics``)."""
    names = select_queues(manager, queues, app)
    stop = stop or threading.Event()
    options: dict[str, Any] = {"concurrency": concurrency or default_concurrency(),
                               "burst": burst, "schedules": schedules}
    if metrics_port is not None:
        options.update(metrics_port=metrics_port, metrics_host=metrics_host)
    workers = {name: Worker(manager.get_queue(name), stop=stop, **options) for name in names}
    with stop_on_signals(stop, install_signal_handlers):
        if may_install_signal_handlers(install_signal_handlers):
            # A supervisor starts its children with these blocked (see the module docstring).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if parent_pid is not None:
            threading.Thread(target=_watch_parent, args=(parent_pid, stop), daemon=True,
                             name="pyqcore-parent-watch").start()
        return run_in_threads(workers)


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    while not stop.wait(PARENT_CHECK_INTERVAL):
        if os.getppid() != parent_pid:
            log.warning("the supervisor (pid %d) is gone: finishing in-flight jobs", parent_pid)
            stop.set()


# -- N processes -----------------------------------------------------------------------------


def run_processes(app: str, processes: int, *, queues: Sequence[str] = (),
                  concurrency: int | None = None, burst: bool = False,
                  schedules: bool = False, restart_delay: float = 0.5,
                  max_restart_delay: float = 30.0, stable_after: float = 10.0,
                  install_signal_handlers: bool = True,
                  metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> int:
    """Run ``processes`` worker processes of ``app`` (``module:attribute`` of a QueueManager)
    until SIGTERM/SIGINT (or, with ``burst``, until each has drained its queues), restarting
    any that dies; returns the exit status (0: every child stopped cleanly). ``queues``,
    ``concurrency`` and ``burst`` are each child's ``pyqcore worker`` options; concurrency
    defaults to the cores divided among the processes. With ``metrics_port`` P, child i
    (from 1) serves its worker metrics on port P + i - 1. The app is imported here first, so
    a wrong name fails at once rather than in a restart loop. ``schedules``: each child
    also adds the due runs of its queues' schedules (each run is added once)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or not processes >= 1:
        raise ConfigurationError(f"processes must be an int >= 1, got {processes!r}")
    if concurrency is not None and (isinstance(concurrency, bool) or
                                    not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
    select_queues(load_manager(app), queues, app)
    command = [sys.executable, "-m", "pyqcore", "worker", app,
               "--concurrency", str(concurrency or default_concurrency(processes)),
               "--parent-pid", str(os.getpid())]
    if burst:
        command.append("--burst")
    if schedules:
        command.append("--schedules")
    for name in queues:
        command += ["--queue", name]
    if metrics_port is not None:
        if not 1 <= metrics_port <= 65536 - processes:
            raise ConfigurationError(f"metrics ports {metrics_port} to "
                                     f"{metrics_port + processes - 1} are not all valid ports")
        command += ["--metrics-host", metrics_host]
    supervisor = Supervisor(command, processes, restart_delay=restart_delay,
                            max_restart_delay=max_restart_delay, stable_after=stable_after)
    if metrics_port is not None:
        supervisor.child_args = lambda number: ["--metrics-port", str(metrics_port + number - 1)]
    return supervisor.run(install_signal_handlers=install_signal_handlers)


@dataclass
class Child:
    """One of the supervisor's worker slots and its current process."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    crashes: int = 0  # consecutive crashes, reset by a run of stable_after seconds
    restart_at: float | None = None
    status: int | None = None  # exit status of its last run
    done: bool = False


class Supervisor:
    """Keeps ``processes`` copies of ``command`` running; see the module docstring."""

    def __init__(self, command: Sequence[str], processes: int, *, restart_delay: float = 0.5,
                 max_restart_delay: float = 30.0, stable_after: float = 10.0,
                 poll_interval: float = 0.1) -> None:
        self.command = list(command)
        self.child_args: Callable[[int], list[str]] = lambda number: []  # per child number
        self.children = [Child(i) for i in range(1, processes + 1)]
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self.poll_interval = poll_interval
        self._requests = 0  # stop requests received (signals or stop())
        self._handled = 0  # stop requests acted on

    @property
    def stopping(self) -> bool:
        return self._handled > 0

    def stop(self) -> None:
        """Ask for a graceful stop (a second call: SIGKILL the children); acted on within
        ``poll_interval``. Safe from a signal handler (it takes no lock) and from a thread."""
        self._requests += 1

    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return [c.process.pid for c in self.children if c.process is not None]

    def run(self, *, install_signal_handlers: bool = True) -> int:
        """Start the children and supervise them until all have exited; the exit status."""
        with self._signals(install_signal_handlers):
            try:
                for child in self.children:
                    self._start(child)
                while not all(child.done for child in self.children):
                    self._act_on_stop_requests()
                    for child in self.children:
                        self._check(child)
                    time.sleep(self.poll_interval)
            except BaseException:
                self._kill_all()  # never leave children behind on an error of our own
                raise
        failed = [c for c in self.children if c.status != 0]
        for child in failed:
            log.warning("worker %d ended with %s", child.number, describe_status(child.status))
        return 1 if failed else 0

    def _start(self, child: Child) -> None:
        child.restart_at = None
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:  # the child inherits the blocked mask through fork and exec (module docstring)
            child.process = subprocess.Popen([*self.command, *self.child_args(child.number)],
                                             start_new_session=True)
        except OSError as exc:
            log.error("worker %d could not start: %s", child.number, exc)
            child.process, child.status = None, 127
            self._schedule_restart(child, time.monotonic())
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.started = time.monotonic()
        log.info("worker %d started (pid %d)", child.number, child.process.pid)

    def _check(self, child: Child) -> None:
        if child.process is None:
            if child.done:
                return
            if self.stopping:
                child.done = True  # it was waiting to be restarted: stays down
            elif child.restart_at is not None and time.monotonic() >= child.restart_at:
                self._start(child)
            return
        status = child.process.poll()
        if status is None:
            return
        pid, child.process, child.status = child.process.pid, None, status
        if self.stopping or status == 0:
            log.info("worker %d (pid %d) exited (%s)", child.number, pid,
                     describe_status(status))
            child.done = True
            return
        self._schedule_restart(child, child.started, pid)

    def _schedule_restart(self, child: Child, started: float, pid: int | None = None) -> None:
        now = time.monotonic()
        child.crashes = 1 if now - started >= self.stable_after else child.crashes + 1
        delay = min(self.max_restart_delay, self.restart_delay * 2 ** (child.crashes - 1))
        child.restart_at = now + delay
        which = f"worker {child.number}" + (f" (pid {pid})" if pid is not None else "")
        log.warning("%s died (%s); restarting in %.2g s", which, describe_status(child.status),
                    delay)

    def _act_on_stop_requests(self) -> None:
        while self._handled < self._requests:
            self._handled += 1
            force = self._handled > 1
            sig = signal.SIGKILL if force else signal.SIGTERM
            log.info("%s: %s", "stopping now" if force else "stopping",
                     "killing every worker" if force else "each worker finishes its jobs")
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(sig)

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None:
                child.process.kill()
                child.process.wait()

    @contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not may_install_signal_handlers(install):
            yield
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop()

        previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def describe_status(status: int | None) -> str:
    """A child's exit status in words: "status 0", "killed by SIGKILL"."""
    if status is None:
        return "no status"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"
