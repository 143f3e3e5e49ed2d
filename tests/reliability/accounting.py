"""An exact account of every job (Jepsen's total-queue checker, adapted to leases).

Every party appends what it did to its own ledger file, one event a line, ``<event> <job id>
[<detail>]``, flushed as written so that a SIGKILL loses at most the line being written:

- ``attempt`` a producer is about to add the job (custom id, so the id is known beforehand);
- ``enqueued`` the add returned: an *acknowledged* enqueue;
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
(enqueue not acknowledged, yet the job made it in) and **in flight at crashes** (deliveries
taken by a crashed writer and never acked by it: the bound on duplicates).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

EVENTS = frozenset({"attempt", "enqueued", "delivered", "executed", "acking", "acked", "ack?",
                    "ack-refused", "dead"})


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
    """One ledger line."""

    writer: str
    event: str
    job_id: str
    detail: str = ""


def read_history(directory: Path | str) -> list[Event]:
    """Every whole line of every ledger in ``directory`` (a torn last line is skipped)."""
    events: list[Event] = []
    for path in sorted(Path(directory).glob("*.log")):
        writer = path.stem
        text = path.read_bytes().decode()
        lines = text.split("\n")[:-1]  # the part after the last newline is torn or empty
        for line in lines:
            parts = line.split(" ", 2)
            if len(parts) < 2 or parts[0] not in EVENTS:
                raise ValueError(f"{path}: malformed ledger line {line!r}")
            events.append(Event(writer, parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return events


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
    recovered: set[str] = field(default_factory=set)
    in_flight_at_crashes: int = 0
    indeterminate_acks: int = 0

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing unexpected, duplicates within the jobs in flight at crashes."""
        return (not self.lost and not self.unexpected
                and len(self.duplicated) <= self.in_flight_at_crashes)

    def summary(self) -> str:
        """One line of counts, for test output and the soak report."""
        return (f"attempted={self.attempted} enqueued={self.enqueued} "
                f"delivered={self.delivered} executed={self.executed} acked={self.acked} "
                f"dead={self.dead} lost={len(self.lost)} unexpected={len(self.unexpected)} "
                f"duplicated={len(self.duplicated)} recovered={len(self.recovered)} "
                f"in_flight_at_crashes={self.in_flight_at_crashes} "
                f"indeterminate_acks={self.indeterminate_acks}")


def check(events: Iterable[Event], crashed: Iterable[str] = ()) -> Account:
    """Account for every job in ``events``; ``crashed`` names the writers that were killed."""
    crashed_writers = set(crashed)
    attempted: set[str] = set()
    enqueued: set[str] = set()
    acked: set[str] = set()
    maybe_acked: set[str] = set()
    dead: set[str] = set()
    delivered: set[str] = set()
    deliveries = 0
    executions: Counter[str] = Counter()
    # (writer, id, token) leases taken by crashed writers, minus the ones they acked
    open_leases: set[tuple[str, str, str]] = set()
    acking: set[tuple[str, str, str]] = set()  # ack intents of crashed writers, unresolved
    for e in events:
        if e.event == "attempt":
            attempted.add(e.job_id)
        elif e.event == "enqueued":
            enqueued.add(e.job_id)
        elif e.event == "delivered":
            delivered.add(e.job_id)
            deliveries += 1
            if e.writer in crashed_writers:
                open_leases.add((e.writer, e.job_id, e.detail))
        elif e.event == "executed":
            executions[e.job_id] += 1
        elif e.event == "acking":
            if e.writer in crashed_writers:
                acking.add((e.writer, e.job_id, e.detail))
        elif e.event == "acked":
            acked.add(e.job_id)
            open_leases.discard((e.writer, e.job_id, e.detail))
            acking.discard((e.writer, e.job_id, e.detail))
        elif e.event == "ack?":
            maybe_acked.add(e.job_id)
            acking.discard((e.writer, e.job_id, e.detail))
        elif e.event == "ack-refused":
            acking.discard((e.writer, e.job_id, e.detail))
        elif e.event == "dead":
            dead.add(e.job_id)
    maybe_acked |= {job_id for _, job_id, _ in acking}
    finished = acked | maybe_acked | dead
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
        recovered=(attempted - enqueued) & (delivered | finished),
        in_flight_at_crashes=len(open_leases),
        indeterminate_acks=len(maybe_acked - acked),
    )


def check_dir(directory: Path | str, crashed: Iterable[str] = ()) -> Account:
    """``check`` over the ledgers in ``directory``."""
    return check(read_history(directory), crashed)
