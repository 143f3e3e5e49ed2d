"""The failover harness: producer and worker threads on a Redis Cluster client, each keeping a
ledger (see ``tests.reliability.accounting``), and a sampler that remembers how far every
ledger had got at each moment, so the events of a time window (the last second before a
primary was killed, the failover itself) can be read back exactly.

Producers and workers share nothing but the cluster: every call goes through one
``RedisCluster`` client per party, as an application's would.
"""

from __future__ import annotations

import bisect
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis.cluster import RedisCluster
from redis.exceptions import (
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyqcore import BaseQueue, Worker
from pyqcore.core.calls import text
from tests.reliability.accounting import EVENTS, Event, Ledger
from tests.reliability.worker_proc import LedgerQueue
from tests.support import LocalRedis

# What a producer rides out on a cluster: the node is gone (connection refused, timeout), or
# the cluster knows it is gone but has not promoted its replica yet (CLUSTERDOWN, TRYAGAIN,
# a slot the client's map does not cover).
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
             SlotNotCoveredError)

Offsets = dict[str, int]  # ledger writer -> bytes written so far


class ErrorTally:
    """Counts exceptions by type, from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, exc: BaseException) -> None:
        with self._lock:
            self.counts[type(exc).__name__] += 1


class LedgerSampler:
    """Every ``interval`` seconds, records the size of every ledger in ``directory`` with the
    time (monotonic), so ``offsets_at(t)`` gives how far each ledger had got at ``t``."""

    def __init__(self, directory: Path, interval: float = 0.05) -> None:
        self.directory = directory
        self.interval = interval
        self.times: list[float] = []
        self.samples: list[Offsets] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-sampler", daemon=True)

    def sample(self) -> Offsets:
        """The ledgers' sizes right now, recorded."""
        now = time.monotonic()
        offsets = {p.stem: p.stat().st_size for p in self.directory.glob("*.log")}
        self.times.append(now)
        self.samples.append(offsets)
        return offsets

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> LedgerSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def offsets_at(self, moment: float) -> Offsets:
        """The last sample taken at or before ``moment`` (the first one if none was)."""
        return self.samples[max(bisect.bisect_right(self.times, moment) - 1, 0)]


def events_between(directory: Path, start: Offsets, end: Offsets | None = None) -> list[Event]:
    """The whole ledger lines written after ``start`` and before ``end`` (default: now)."""
    events: list[Event] = []
    for path in sorted(directory.glob("*.log")):
        writer = path.stem
        data = path.read_bytes()
        stop = len(data) if end is None else end.get(writer, 0)
        chunk = data[start.get(writer, 0):stop].decode()
        for line in chunk.split("\n")[:-1]:  # the part after the last newline is torn/empty
            parts = line.split(" ", 2)
            if len(parts) < 2 or parts[0] not in EVENTS:
                raise ValueError(f"{path}: malformed ledger line {line!r}")
            events.append(Event(writer, parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return events


def ids_of(events: list[Event], *kinds: str) -> set[str]:
    """The job ids of the ``events`` of the given kinds."""
    return {e.job_id for e in events if e.event in kinds}


@dataclass
class Party:
    """A producer or worker thread; ``failure`` is the traceback of what escaped it, if any."""

    writer: str
    thread: threading.Thread
    failure: str | None = None


@dataclass
class FailoverRun:
    """Producers and workers (threads) on queue ``queue`` of a cluster; each party gets its
    own client from ``connect`` and its own ledger in ``ledger_dir``."""

    connect: Callable[[], RedisCluster]
    ledger_dir: Path
    rng: random.Random
    queue: str = "failover"
    visibility_timeout: float = 5.0
    concurrency: int = 2
    work: float = 0.002
    producer_errors: ErrorTally = field(default_factory=ErrorTally)
    parties: list[Party] = field(default_factory=list)
    stop_producing: threading.Event = field(default_factory=threading.Event)
    stop_working: threading.Event = field(default_factory=threading.Event)

    def _start(self, writer: str, target: Callable[[], None]) -> None:
        party = Party(writer, threading.Thread(name=writer, daemon=True))

        def run() -> None:
            try:
                target()
            except BaseException:
                party.failure = traceback.format_exc()

        party.thread = threading.Thread(target=run, name=writer, daemon=True)
        self.parties.append(party)
        party.thread.start()

    def start_worker(self, writer: str) -> None:
        """A worker (the loop behind ``queue.process``) until ``stop_working`` is set."""
        def work() -> None:
            client = self.connect()
            try:
                with Ledger(self.ledger_dir, writer) as ledger:
                    # LedgerQueue's annotation says redis.Redis; BaseQueue takes either client
                    queue = LedgerQueue(client, ledger, name=self.queue,
                                        work=self.work,
                                        visibility_timeout=self.visibility_timeout)
                    Worker(queue, concurrency=self.concurrency, idle_wait=0.2,
                           stop=self.stop_working).run(install_signal_handlers=False)
            finally:
                client.close()

        self._start(writer, work)

    def start_producer(self, writer: str, max_batch: int = 10, pause: float = 0.01) -> None:
        """Adds batches of custom-id jobs (``<writer>-<n>``) until ``stop_producing`` is set;
        a failed add is retried with the same ids (idempotent) until it is acknowledged."""
        rng = random.Random(self.rng.randrange(2**32))

        def produce() -> None:
            client = self.connect()
            try:
                with Ledger(self.ledger_dir, writer) as ledger:
                    queue = BaseQueue(client, name=self.queue)
                    i = 0
                    while not self.stop_producing.is_set():
                        n = rng.randint(1, max_batch)
                        ids = [f"{writer}-{k}" for k in range(i, i + n)]
                        failures = 0
                        while True:
                            ledger.log("attempt", ids)
                            try:
                                queue.add_batch([{"n": k} for k in range(i, i + n)],
                                                job_ids=ids)
                                break
                            except TRANSIENT as exc:
                                self.producer_errors.add(exc)
                                failures += 1
                                time.sleep(min(0.01 * 2 ** min(failures, 7), 0.5))  # backoff
                        ledger.log("enqueued", ids)
                        i += n
                        time.sleep(rng.uniform(0, pause))
            finally:
                client.close()

        self._start(writer, produce)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop producers and workers (gracefully) and wait for every thread."""
        self.stop_producing.set()
        self.stop_working.set()
        for party in self.parties:
            party.thread.join(timeout)

    def failures(self) -> dict[str, str]:
        """What escaped a party's thread (a traceback), or is still running after ``stop``."""
        found = {p.writer: p.failure for p in self.parties if p.failure}
        found.update({p.writer: "still running" for p in self.parties if p.thread.is_alive()})
        return found

    def drain(self) -> dict[str, int]:
        """The reclaim pass: a worker whose clock is past every lease deadline finishes what is
        left, then the DLQ is written to the ledger. Returns the final counts."""
        client = self.connect()
        try:
            later = time.time() + self.visibility_timeout + 1
            with Ledger(self.ledger_dir, "drain") as ledger:
                queue = LedgerQueue(client, ledger, name=self.queue,
                                    visibility_timeout=self.visibility_timeout,
                                    clock=lambda: later)
                queue.process(concurrency=2, burst=True, install_signal_handlers=False)
                members: list[bytes] = client.zrange(  # type: ignore[assignment]
                    queue.keys.key("dead"), 0, -1)
                ledger.log("dead", [text(i) for i in members])
            return BaseQueue(client, name=self.queue).counts()
        finally:
            client.close()



@contextmanager
def frozen(nodes: list[LocalRedis]) -> Iterator[None]:
    """SIGSTOP ``nodes`` (servers this test started) while inside; SIGCONT them on the way
    out, whatever happened."""
    for node in nodes:
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)


def cut_replication(primary: LocalRedis) -> int:
    """Close ``primary``'s links to its replicas (``CLIENT KILL TYPE replica``), as a network
    fault would: what it writes from here on reaches no replica until one reconnects. Returns
    how many links were closed."""
    conn = primary.client(socket_timeout=1.0)
    try:
        return int(conn.client_kill_filter(_type="replica"))
    finally:
        conn.close()
