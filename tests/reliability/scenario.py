"""The fault-test harness shared by the tests and the soak: worker and producer processes
around one real redis-server, faults injected from here, and the final account."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pyqcore import BaseQueue
from pyqcore.core.calls import text
from pyqcore.testing import ManualClock
from tests.reliability.accounting import Account, Ledger, Outage, check_dir, offsets
from tests.reliability.worker_proc import LedgerQueue
from tests.support import LocalRedis

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.02) -> None:
    """Poll ``condition`` until true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Scenario:
    """Workers and producers (real processes) on ``server``; every one keeps a ledger."""

    server: LocalRedis
    ledger_dir: Path
    rng: random.Random
    queue: str = "rel"
    visibility_timeout: float = 2.0
    concurrency: int = 2
    work: float = 0.005
    max_retries: int = 3
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    producers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    crashed: set[str] = field(default_factory=set)
    outages: list[Outage] = field(default_factory=list)  # when Redis or connections failed
    kills: int = 0
    restarts: int = 0
    _serial: int = 0

    def _spawn(self, role: str, writer: str, *extra: str) -> subprocess.Popen[bytes]:
        with (self.ledger_dir / f"{writer}.err").open("wb") as stderr:  # its log, kept
            return subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.worker_proc", role, self.server.url,
                 self.queue, str(self.ledger_dir), writer, *extra],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)

    def errors(self) -> dict[str, str]:
        """The stderr of every process that wrote tracebacks, by writer."""
        logs = {path.stem: path.read_text(errors="replace")
                for path in sorted(self.ledger_dir.glob("*.err"))}
        return {writer: text for writer, text in logs.items() if "Traceback" in text}

    def _name(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}"

    def start_worker(self) -> str:
        """Start one worker process; returns its writer name."""
        writer = self._name("w")
        self.workers[writer] = self._spawn(
            "worker", writer, "--visibility-timeout", str(self.visibility_timeout),
            "--concurrency", str(self.concurrency), "--work", str(self.work),
            "--max-retries", str(self.max_retries))
        return writer

    def start_producer(self, jobs: int, *, max_batch: int = 10, pause: float = 0.2) -> str:
        """Start one producer process adding ``jobs`` jobs; returns its writer name."""
        writer = self._name("p")
        self.producers[writer] = self._spawn(
            "producer", writer, "--jobs", str(jobs), "--seed", str(self.rng.randrange(2**32)),
            "--max-batch", str(max_batch), "--pause", str(pause))
        return writer

    def producing(self) -> bool:
        """True while a producer runs."""
        return any(p.poll() is None for p in self.producers.values())

    def kill_random_worker(self, respawn: bool = True) -> str | None:
        """SIGKILL a random live worker (and start a fresh one); returns the victim."""
        alive = sorted(w for w, p in self.workers.items() if p.poll() is None)
        if not alive:
            return None
        victim = self.rng.choice(alive)
        proc = self.workers[victim]
        proc.kill()
        proc.wait(10)
        self.crashed.add(victim)
        self.kills += 1
        if respawn:
            self.start_worker()
        return victim

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Record the block as an outage (for the account: the leases open during it may run
        twice), placed by how far every ledger had been written at its start and end."""
        start = offsets(self.ledger_dir)
        try:
            yield
        finally:
            self.outages.append(Outage(start, offsets(self.ledger_dir)))

    def restart_redis(self, down: float = 0.0) -> None:
        """SIGKILL redis-server, stay down ``down`` seconds, start it again (same port, dir)."""
        with self.outage():
            self.server.stop(kill=True)
            if down:
                time.sleep(down)  # the outage itself, not a synchronisation
            self.server.start()
        self.restarts += 1

    def wait_producers(self, timeout: float) -> None:
        """Wait for every producer to exit 0."""
        for writer, proc in self.producers.items():
            code = proc.wait(timeout)
            assert code == 0, f"producer {writer} exited {code}"

    def stop_workers(self, timeout: float = 15.0) -> None:
        """SIGTERM the live workers (a graceful stop) and wait; they must exit 0."""
        live = {w: p for w, p in self.workers.items() if p.poll() is None}
        for writer in live:  # a worker still starting up would die of the default handler
            wait_until((self.ledger_dir / f"{writer}.ready").exists, timeout,
                       f"worker {writer} to start")
        for proc in live.values():
            proc.send_signal(signal.SIGTERM)
        for writer, proc in live.items():
            code = proc.wait(timeout)
            assert code == 0, f"worker {writer} exited {code}"

    def kill_all(self) -> None:
        """Clean-up: SIGKILL every process still running."""
        for proc in [*self.workers.values(), *self.producers.values()]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def drain(self) -> dict[str, int]:
        """The reclaim pass: a worker whose clock is past every lease deadline finishes what is
        left (in this process), then the DLQ is written to the ledger. Returns final counts."""
        client = self.server.client()
        try:
            later = time.time() + self.visibility_timeout + 1
            with Ledger(self.ledger_dir, "drain") as ledger:
                queue = LedgerQueue(client, ledger, name=self.queue, work=0.0,
                                    die_on_poison=False,
                                    visibility_timeout=self.visibility_timeout,
                                    max_retries=self.max_retries, clock=ManualClock(later))
                queue.process(concurrency=4, burst=True, install_signal_handlers=False)
                members: list[bytes] = client.zrange(queue.keys.key("dead"), 0, -1)  # type: ignore[assignment]
                dead = [text(i) for i in members]
                ledger.log("dead", dead)
            return BaseQueue(client, name=self.queue).counts()
        finally:
            client.close()

    def account(self) -> Account:
        """Check the ledgers (duplicates judged per job against the kills and outages)."""
        return check_dir(self.ledger_dir, self.crashed, self.outages)
