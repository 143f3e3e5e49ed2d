"""The failover harness: producer and worker threads on a Redis Cluster or a Sentinel-managed
client, each keeping a ledger (see ``tests.reliability.accounting``), and a sampler that
remembers how far every ledger had got at each moment, so the events of a time window (the
last second before a primary was killed, the failover itself) can be read back exactly.

Producers and workers share nothing but the deployment: every call goes through one client
per party, as an application's would (``tests/cluster/test_failover.py``,
``tests/sentinel/test_failover.py``).
"""

from __future__ import annotations

import bisect
import logging
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

from redis.exceptions import (
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyqcore import BaseQueue, RedisUnavailableError, Worker
from pyqcore.core.calls import text
from pyqcore.sync.driver import Client
from pyqcore.testing import ManualClock
from tests.reliability.accounting import EVENTS, Account, Event, Ledger, check_dir
from tests.reliability.scenario import wait_until
from tests.reliability.worker_proc import LedgerQueue
from tests.support import LocalRedis

# What a producer rides out: the primary is gone (connection refused, timeout; with Sentinel,
# no master found yet), or the cluster knows it is gone but has not promoted its replica yet
# (CLUSTERDOWN, TRYAGAIN, a slot the client's map does not cover).
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


class Records(logging.Handler):
    """Keeps pyqcore's warnings and errors, to report how the workers rode the failover out."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def summary(self) -> Counter[str]:
        """Record count by level and cause (the exception type behind it, if any)."""
        found: Counter[str] = Counter()
        for r in self.records:
            cause = r.exc_info[0].__name__ if r.exc_info and r.exc_info[0] else "-"
            found[f"{r.levelname} {r.msg} [{cause}]"] += 1
        return found


def reused_leases(ledger_dir: Path) -> tuple[int, int]:
    """How many (job, lease token) pairs were delivered to more than one writer, and of those,
    how many had the ack of more than one writer accepted. Tokens are random per reserve, so
    both must be 0 even after a failover: a counter in Redis, rolled back by the promotion of
    a replica that missed its last values, once handed the same pair out twice."""
    holders: dict[tuple[str, str], set[str]] = {}
    ackers: dict[tuple[str, str], set[str]] = {}
    for e in events_between(ledger_dir, {}):
        if e.event == "delivered":
            holders.setdefault((e.job_id, e.detail), set()).add(e.writer)
        elif e.event == "acked":
            ackers.setdefault((e.job_id, e.detail), set()).add(e.writer)
    shared = [pair for pair, writers in holders.items() if len(writers) > 1]
    return len(shared), sum(len(ackers.get(pair, ())) > 1 for pair in shared)


def count(ledger_dir: Path, kind: str) -> int:
    """Distinct jobs with a ``kind`` event so far."""
    return len(ids_of(events_between(ledger_dir, {}), kind))


@dataclass
class Party:
    """A producer or worker thread; ``failure`` is the traceback of what escaped it, if any."""

    writer: str
    thread: threading.Thread
    failure: str | None = None


@dataclass
class FailoverRun:
    """Producers and workers (threads) on queue ``queue`` of a replicated deployment; each
    party gets its own client from ``connect`` and its own ledger in ``ledger_dir``.

    With ``confirm_replicas`` N > 0, a producer follows every acknowledged add with
    ``WAIT N timeout`` and logs the jobs ``replicated`` when N replicas confirmed them: those
    cannot be lost by a failover to one of those replicas. WAIT counts the writes of its own
    connection: a producer is one thread with a client of its own, so the add and the WAIT
    share the one pooled connection. (After a reconnect, a WAIT on the fresh connection has no
    write to wait for; on a primary promoted from the only replica it still confirms nothing,
    since that primary has no replica. A single-connection client would make this explicit,
    but redis-py 8.1 reconnects one to the old primary's address forever: redis-py#3874.)"""

    connect: Callable[[], Client]
    ledger_dir: Path
    rng: random.Random
    queue: str = "failover"
    visibility_timeout: float = 5.0
    concurrency: int = 2
    work: float = 0.002
    confirm_replicas: int = 0
    confirm_timeout_ms: int = 100
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
                            except RedisUnavailableError as exc:  # typed: its cause
                                self.producer_errors.add(exc.__cause__ or exc)
                                failures += 1
                                time.sleep(min(0.01 * 2 ** min(failures, 7), 0.5))  # backoff
                        ledger.log("enqueued", ids)
                        if self.confirm_replicas and self._replicated(client):
                            ledger.log("replicated", ids)
                        i += n
                        time.sleep(rng.uniform(0, pause))
            finally:
                client.close()

        self._start(writer, produce)

    def _replicated(self, client: Client) -> bool:
        """Whether ``confirm_replicas`` replicas hold every write sent so far on ``client``'s
        connection (False if the WAIT failed: the primary may have died)."""
        try:
            acked = client.execute_command(  # type: ignore[no-untyped-call]
                "WAIT", self.confirm_replicas, self.confirm_timeout_ms)
        except TRANSIENT as exc:
            self.producer_errors.add(exc)
            return False
        return int(acked) >= self.confirm_replicas

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
                                    clock=ManualClock(later))
                queue.process(concurrency=2, burst=True, install_signal_handlers=False)
                members: list[bytes] = client.zrange(  # type: ignore[assignment]
                    queue.keys.key("dead"), 0, -1)
                ledger.log("dead", [text(i) for i in members])
            return BaseQueue(client, name=self.queue).counts()
        finally:
            client.close()


# -- a staged failover ---------------------------------------------------------------------

WINDOW = 1.0  # seconds before a kill whose acknowledged writes may not have been replicated
WORKERS = ("w1", "w2")
PRODUCERS = ("p1", "p2")


@dataclass
class Failover:
    """How a staged failover went: the primary killed and the one promoted; when (monotonic
    seconds) and how long until the deployment named the promoted one, and until the first
    acknowledged enqueue and the first ack after the kill; the ledgers' offsets at the kill
    and once failed over, and before the cut of the replication link if there was one."""

    victim: LocalRedis
    promoted: LocalRedis
    killed_at: float
    failover_s: float
    enqueue_back_s: float
    ack_back_s: float
    at_kill: Offsets
    at_ok: Offsets
    cut: Offsets | None

    def window(self, sampler: LedgerSampler) -> list[Event]:
        """The events from WINDOW seconds before the kill (or the cut, if earlier) until the
        failover was over: what the dead primary may have acknowledged without replicating."""
        start = sampler.offsets_at(self.killed_at - WINDOW)
        if self.cut is not None:
            start = {w: min(start.get(w, 0), self.cut.get(w, 0)) for w in {*start, *self.cut}}
        return events_between(sampler.directory, start, self.at_ok)


def stage_failover(run: FailoverRun, sampler: LedgerSampler,
                   kill: Callable[[], tuple[LocalRedis, Offsets | None]],
                   promoted: Callable[[LocalRedis], LocalRedis]) -> Failover:
    """Start two workers and two producers; once under load (and for WINDOW seconds at
    least), ``kill`` the primary (it returns the victim, and the offsets before it cut the
    replication link if it did); wait until ``promoted`` (the new primary) and until every party
    has carried on, with no restart; stop producing, wait until the workers have emptied the
    queue, and stop them. Always stops every party and the sampler."""
    ledger_dir = run.ledger_dir
    try:
        for writer in WORKERS:
            run.start_worker(writer)
        for writer in PRODUCERS:
            run.start_producer(writer)
        started = time.monotonic()
        wait_until(lambda: (count(ledger_dir, "enqueued") >= 300
                            and count(ledger_dir, "acked") >= 100
                            and time.monotonic() - started > WINDOW), 10.0, "load before the kill")
        victim, cut = kill()
        killed_at = time.monotonic()
        at_kill = sampler.sample()
        new_primary = promoted(victim)
        failover_s = time.monotonic() - killed_at
        at_ok = sampler.sample()
        enqueue_back_s = _first_after(ledger_dir, at_kill, "enqueued") - killed_at
        ack_back_s = _first_after(ledger_dir, at_kill, "acked") - killed_at

        def everyone_carried_on() -> bool:
            after = events_between(ledger_dir, at_ok)
            return (all(any(e.writer == w and e.event == "enqueued" for e in after)
                        for w in PRODUCERS)
                    and all(any(e.writer == w and e.event == "acked" for e in after)
                            for w in WORKERS)
                    and len(ids_of(after, "enqueued")) >= 200)

        wait_until(everyone_carried_on, 10.0, "producers and workers to carry on")
        run.stop_producing.set()
        client = run.connect()
        try:
            queue = BaseQueue(client, name=run.queue)
            wait_until(lambda: (c := queue.counts())["ready"] + c["delayed"] == 0, 10.0,
                       "the workers to empty the queue")
        finally:
            client.close()
    finally:
        run.stop()
        sampler.stop()
    return Failover(victim, new_primary, killed_at, failover_s, enqueue_back_s, ack_back_s,
                    at_kill, at_ok, cut)


def _first_after(ledger_dir: Path, offsets: Offsets, kind: str) -> float:
    """When (monotonic) some ledger first had a ``kind`` event past ``offsets``."""
    wait_until(lambda: bool(ids_of(events_between(ledger_dir, offsets), kind)), 10.0,
               f"a {kind} event after the kill")
    return time.monotonic()


def check_failover(run: FailoverRun, failover: Failover, sampler: LedgerSampler,
                   log: Records) -> Account:
    """Drain the queue, account for every job, print the figures, and assert what holds
    after any failover: no party died, no lease went to two writers, nothing unexpected
    appeared, a job ran twice only if it was leased or acked around the kill, and nothing is
    left. Returns the account, for the test's own assertions about what was lost."""
    assert run.failures() == {}
    final = run.drain()
    account = check_dir(run.ledger_dir)
    window = failover.window(sampler)
    reused, both_acked = reused_leases(run.ledger_dir)
    print(f"\nfailover: primary :{failover.victim.port} killed, :{failover.promoted.port} "
          f"promoted after {failover.failover_s:.2f} s; first enqueue after the kill at "
          f"{failover.enqueue_back_s:.2f} s, first ack at {failover.ack_back_s:.2f} s")
    print(f"enqueues acknowledged from {WINDOW:.0f} s before the kill until it was over: "
          f"{len(ids_of(window, 'enqueued'))}")
    print(f"account: {account.summary()}")
    print(f"(job, lease token) pairs delivered to two writers: {reused}, "
          f"acked by both: {both_acked}")
    print(f"lost: {sorted(account.lost)}")
    print(f"duplicated: {sorted(account.duplicated)}")
    print(f"final counts: {final}")
    print(f"producer errors ridden out: {dict(run.producer_errors.counts)}")
    print("pyqcore log:", *(f"  {n} x {what}" for what, n in log.summary().items()), sep="\n")
    assert (reused, both_acked) == (0, 0)
    assert not account.unexpected
    assert account.duplicated <= ids_of(window, "delivered", "acking", "ack?")
    assert final == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    return account


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


def kill_while_unreplicated(victim: LocalRedis, replicas: list[LocalRedis],
                            sampler: LedgerSampler) -> Offsets:
    """Freeze ``victim``'s ``replicas`` (so none can reconnect), cut its replication links,
    wait until producers have had some enqueues acknowledged that no replica can have, SIGKILL
    it and thaw the replicas (within a second or so: a replica judged down would not be
    promoted). Returns the ledger offsets just before the cut: every enqueue acknowledged
    after them and before the kill is on no replica."""
    with frozen(replicas):
        cut = sampler.sample()
        assert cut_replication(victim) >= 1

        def acknowledged_since_cut() -> int:
            return len(ids_of(events_between(sampler.directory, cut), "enqueued"))

        wait_until(lambda: acknowledged_since_cut() >= 20, 5.0, "enqueues after the cut")
        victim.stop(kill=True)
        return cut


def cut_replication(primary: LocalRedis) -> int:
    """Close ``primary``'s links to its replicas (``CLIENT KILL TYPE replica``), as a network
    fault would: what it writes from here on reaches no replica until one reconnects. Returns
    how many links were closed."""
    conn = primary.client(socket_timeout=1.0)
    try:
        return int(conn.client_kill_filter(_type="replica"))
    finally:
        conn.close()
