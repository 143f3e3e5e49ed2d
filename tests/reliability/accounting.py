"""An exact account of every job (Jepsen's total-queue checker, adapted to leases).

Every party appends what it did to its own ledger file, one event a line, ``<event> <job id>
[<detail>]``, flushed as written so that a SIGKILL loses at most the line being written:

- ``attempt`` a producer is about to add the job (custom id, so the id is known beforehand);
- ``enqueued`` the add returned: an *acknowledged* enqueue;
- ``replicated`` a ``WAIT`` after the add confirmed that a replica holds it (the failover
  tests: such a job survives the primary's death; ``check`` itself ignores the event);
- ``delivered`` a worker's handler got the job (detail: the lease token);
- ``executed`` the handler finished the job;
- ``acking`` a worker is about to send the ack (detail: the token);
- ``acked`` the ack script confirmed the lease (detail: the token); ``ack-refused``: the
  lease was stale;
- ``ack?`` the ack call failed in transit: it may or may not have run (indeterminate). So is
  an ``acking`` with no outcome from a writer that crashed: it died waiting for the reply;
- ``dead`` the job is in the dead-letter queue (written by the harness from Redis at the end).

``check`` then counts: **lost** (acknowledged enqueue, never acked nor dead), **unexpected**
(delivered but never attempted), **duplicated** (executed more than once), **recovered**
(enqueue not acknowledged, yet the job made it in), and judges duplicates **per job**: a job
may run more than once only as often as its own history explains, each extra run by

- a lease of *that job* open at a kill: delivered to a writer that crashed without seeing it
  settled (``acked``, or ``ack-refused``: then another delivery had already taken over while
  the writer lived, which the kill cannot explain);
- a lease of *that job* open at an outage (a Redis restart, killed connections, a stall) and
  never confirmed acked: taken before the outage ended, not settled (``acked`` /
  ``ack-refused``) before it began. Outages are given as the ledgers' sizes at their start
  and end (``offsets``), so no clock is shared: a line is before an outage if its writer had
  written it when the outage began (a lease starts at the first delivery of its token, when
  its batch arrived);
- a retried add (``attempt`` logged again: its first reply was lost, and the job may have run
  and been acked before the retry added it anew).

A duplicate that none of these explains is **unexplained**, and fails the account: a job that
ran twice on two live workers while a crashed one held some *other* job is not excused.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

EVENTS = frozenset({"attempt", "enqueued", "replicated", "delivered", "executed", "acking",
                    "acked", "ack?", "ack-refused", "dead"})


class Ledger:
    """One writer's append-only event log: ``<dir>/<writer>.log``; thread-safe."""

    def __init__(self, directory: Path | str, writer: str) -> None:
        if not writer or any(c in writer for c in " /\n"):
            raise ValueError(f"bad writer name {writer!r}")
        self.path = Path(directory) / f"{writer}.log"
        self._lock = threading.Lock()
        # O_APPEND and one write() per line: a killed process leaves whole lines behind.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def log(self, event: str, job_ids: Iterable[str], detail: str = "") -> None:
        """Record ``event`` for each of ``job_ids`` (one write for the lot)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}")
        suffix = f" {detail}\n" if detail else "\n"
        data = "".join(f"{event} {job_id}{suffix}" for job_id in job_ids).encode()
        if data:
            with self._lock:
                os.write(self._fd, data)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Event:
    """One ledger line; ``at`` is where it starts in its writer's ledger (bytes; -1 when not
    read from a file)."""

    writer: str
    event: str
    job_id: str
    detail: str = ""
    at: int = field(default=-1, compare=False)  # where, not what: not part of equality


def read_history(directory: Path | str) -> list[Event]:
    """Every whole line of every ledger in ``directory`` (a torn last line is skipped)."""
    events: list[Event] = []
    for path in sorted(Path(directory).glob("*.log")):
        writer = path.stem
        at = 0
        for raw in path.read_bytes().split(b"\n")[:-1]:  # after the last newline: torn/empty
            line = raw.decode()
            parts = line.split(" ", 2)
            if len(parts) < 2 or parts[0] not in EVENTS:
                raise ValueError(f"{path}: malformed ledger line {line!r}")
            events.append(Event(writer, parts[0], parts[1], parts[2] if len(parts) > 2 else "",
                                at))
            at += len(raw) + 1
    return events


def offsets(directory: Path | str) -> dict[str, int]:
    """How far each ledger in ``directory`` has been written (bytes), by writer: taken at the
    start and the end of an outage, they place every line before, during or after it."""
    return {path.stem: path.stat().st_size for path in Path(directory).glob("*.log")}


@dataclass(frozen=True)
class Outage:
    """A stretch during which calls could fail or replies be lost: the ledgers' ``offsets``
    when it began and when it was over."""

    start: Mapping[str, int]
    end: Mapping[str, int]


@dataclass
class Lease:
    """One delivery: a job leased to a writer under a token."""

    start: int  # where the token's first delivery line starts in the writer's ledger
    settled: int | None = None  # where its first acked / ack-refused line starts, if any
    acked: bool = False  # settled by an acked line (not refused)

    def open_at(self, writer: str, outage: Outage) -> bool:
        """Taken before the outage ended, not settled before it began. (Unplaced lines, from
        histories not read from files, are never in an outage.)"""
        if self.start < 0:
            return False
        begun_after = self.settled is None or self.settled >= outage.start.get(writer, 0)
        return self.start < outage.end.get(writer, 0) and begun_after


@dataclass
class Account:
    """What ``check`` found; the sets name the jobs behind each count."""

    attempted: int = 0
    enqueued: int = 0
    delivered: int = 0  # deliveries (a job delivered twice counts twice)
    executed: int = 0  # handler runs that finished
    acked: int = 0  # distinct jobs acked (confirmed or indeterminate)
    dead: int = 0
    lost: set[str] = field(default_factory=set)
    unexpected: set[str] = field(default_factory=set)
    duplicated: set[str] = field(default_factory=set)
    unexplained: set[str] = field(default_factory=set)  # ran more often than its history allows
    recovered: set[str] = field(default_factory=set)
    in_flight_at_crashes: int = 0  # leases open at a kill
    in_flight_at_outages: int = 0  # leases open at an outage (and not at a kill)
    indeterminate_acks: int = 0

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing unexpected, every duplicate explained by its own history."""
        return not self.lost and not self.unexpected and not self.unexplained

    def summary(self) -> str:
        """One line of counts, for test output and the soak report."""
        return (f"attempted={self.attempted} enqueued={self.enqueued} "
                f"delivered={self.delivered} executed={self.executed} acked={self.acked} "
                f"dead={self.dead} lost={len(self.lost)} unexpected={len(self.unexpected)} "
                f"duplicated={len(self.duplicated)} unexplained={len(self.unexplained)} "
                f"recovered={len(self.recovered)} "
                f"in_flight_at_crashes={self.in_flight_at_crashes} "
                f"in_flight_at_outages={self.in_flight_at_outages} "
                f"indeterminate_acks={self.indeterminate_acks}")


def check(events: Iterable[Event], crashed: Iterable[str] = (),
          outages: Iterable[Outage] = ()) -> Account:
    """Account for every job in ``events``; ``crashed`` names the writers that were killed,
    ``outages`` the stretches when Redis or the connections to it failed."""
    crashed_writers = set(crashed)
    faults = list(outages)
    attempts: Counter[str] = Counter()
    leases: dict[tuple[str, str, str], Lease] = {}  # (writer, job id, token)
    batches: dict[tuple[str, str], int] = {}  # (writer, token) -> its first delivery's line
    attempted: set[str] = set()
    enqueued: set[str] = set()
    acked: set[str] = set()
    maybe_acked: set[str] = set()
    dead: set[str] = set()
    delivered: set[str] = set()
    deliveries = 0
    executions: Counter[str] = Counter()
    acking: set[tuple[str, str, str]] = set()  # ack intents of crashed writers, unresolved
    for e in events:
        lease_key = (e.writer, e.job_id, e.detail)
        if e.event == "attempt":
            attempted.add(e.job_id)
            attempts[e.job_id] += 1
        elif e.event == "enqueued":
            enqueued.add(e.job_id)
        elif e.event == "delivered":
            delivered.add(e.job_id)
            deliveries += 1
            leases.setdefault(lease_key, Lease(batches.setdefault((e.writer, e.detail), e.at)))
        elif e.event == "executed":
            executions[e.job_id] += 1
        elif e.event == "acking":
            if e.writer in crashed_writers:
                acking.add(lease_key)
        elif e.event in ("acked", "ack-refused"):
            if e.event == "acked":
                acked.add(e.job_id)
            acking.discard(lease_key)
            settled = leases.get(lease_key)
            if settled is not None and settled.settled is None:
                settled.settled, settled.acked = e.at, e.event == "acked"
        elif e.event == "ack?":
            maybe_acked.add(e.job_id)
            acking.discard(lease_key)
        elif e.event == "dead":
            dead.add(e.job_id)
    maybe_acked |= {job_id for _, job_id, _ in acking}
    finished = acked | maybe_acked | dead
    # A crashed writer's lease it never saw settled (an ack? is not settled: it may not have
    # run); an ack-refused lease had been taken over while the writer still lived.
    at_kills = {key for key, lease in leases.items()
                if key[0] in crashed_writers and lease.settled is None}
    # A lease open at an outage, unless its ack was confirmed: then the job was gone, and
    # only a new add could have brought it back.
    at_outages = {key for key, lease in leases.items() if key not in at_kills
                  and not lease.acked and any(lease.open_at(key[0], o) for o in faults)}
    excuses = Counter(job_id for _, job_id, _ in at_kills | at_outages)
    unexplained = {job_id for job_id, runs in executions.items()
                   if runs - 1 > excuses[job_id] + max(attempts[job_id] - 1, 0)}
    return Account(
        attempted=len(attempted),
        enqueued=len(enqueued),
        delivered=deliveries,
        executed=sum(executions.values()),
        acked=len(acked | maybe_acked),
        dead=len(dead),
        lost=enqueued - finished,
        unexpected=(delivered | finished) - attempted - enqueued,
        duplicated={job_id for job_id, n in executions.items() if n > 1},
        unexplained=unexplained,
        recovered=(attempted - enqueued) & (delivered | finished),
        in_flight_at_crashes=len(at_kills),
        in_flight_at_outages=len(at_outages),
        indeterminate_acks=len(maybe_acked - acked),
    )


def check_dir(directory: Path | str, crashed: Iterable[str] = (),
              outages: Iterable[Outage] = ()) -> Account:
    """``check`` over the ledgers in ``directory``."""
    return check(read_history(directory), crashed, outages)
