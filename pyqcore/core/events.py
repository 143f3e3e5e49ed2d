"""The flows that read a queue's events streams (``lua/includes/events.lua``), written once for
both drivers: waiting for one job's result (``queue.result``) and reading events in order
(``queue.events``, ``pyqcore events``). Each partition has its own stream, in its own slot;
entries are in order within a partition (their ids are the server's time), not across them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from pyqcore.checks import MAX_DELAY, check_seconds
from pyqcore.core.calls import QueueCalls, ResultRow, given_id, text
from pyqcore.core.effects import Command, Flow, Read
from pyqcore.errors import (
    ConfigurationError,
    JobCancelledError,
    JobDeadError,
    JobNotFoundError,
    ResultTimeoutError,
)
from pyqcore.events import TERMINAL, Event, EventKind
from pyqcore.job import ErrorInfo

READ_COUNT = 100  # most entries one read returns per stream
CLUSTER_WAIT = 1.0  # on a cluster, the longest block on one partition's stream before the next
_ENTRY_ID = re.compile(r"\d+(-\d+)?")
_LAST_SEQ = 2**64 - 1  # the largest sequence number of an entry id

Entry = tuple[str, str, dict[bytes, bytes]]  # (stream key, entry id, fields)


def stream_entries(reply: Any) -> list[Entry]:
    """An XREAD reply (RESP2's list of [key, entries], RESP3's map) as (key, id, fields)."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    found: list[Entry] = []
    for key, listed in streams:
        entries = listed[0] if listed and isinstance(listed[0], list) else listed  # RESP3 nests
        found += [(text(key), text(entry_id), fields or {}) for entry_id, fields in entries]
    return found


def event_of(partition: int, entry_id: str, fields: dict[bytes, bytes]) -> Event:
    """One stream entry as an ``Event``."""
    return Event(kind=cast("EventKind", text(fields.get(b"event", b""))),
                 job_id=text(fields.get(b"id", b"")), attempt=int(fields.get(b"attempt", 0)),
                 time=int(entry_id.split("-", 1)[0]) / 1000.0, partition=partition,
                 entry_id=entry_id)


# -- queue.result ----------------------------------------------------------------------------

def wait_for_result(parts: Sequence[QueueCalls], job_id: str, timeout: float | None
                    ) -> Flow[Any]:
    """The result of job ``job_id`` once it completes: at once if it has, else after its
    ``completed`` event (one blocking XREAD after another, from the stream's last entry read
    with the job's state, so none can be missed; each wake-up is a real entry). Raises
    JobDeadError, JobCancelledError, JobNotFoundError or, past ``timeout`` seconds (None: no
    limit), ResultTimeoutError."""
    job_id = given_id(job_id)
    deadline = None if timeout is None else \
        time.monotonic() + check_seconds("timeout", timeout, high=MAX_DELAY, zero=True)
    rows: list[ResultRow] = yield [part.job_result(job_id) for part in parts]
    found = [(part, row) for part, row in zip(parts, rows, strict=True) if row.state != "none"]
    if not found:
        raise JobNotFoundError(f"no job {job_id!r} in queue {parts[0].queue!r} (never added, "
                               "or gone: purged, or trimmed from the jobs the queue keeps)")
    part, row = found[0]
    cursor = row.last_id
    while row.state == "live":
        kind, cursor = yield from _terminal_event(part, job_id, cursor, deadline)
        # completed (with its result) or dead (its error) read again; cancelled: as it said
        row = ResultRow(kind, None, cursor) if kind == "cancelled" else \
            (yield part.job_result(job_id))
    if row.state == "cancelled":  # now, or kept since (lua/includes/keep_cancelled.lua)
        raise JobCancelledError(f"job {job_id!r} was cancelled: it has no result")
    if row.state == "dead":
        error = ErrorInfo.from_json(row.value)
        raise JobDeadError(f"job {job_id!r} is dead: {error.type if error else '?'}: "
                           f"{error.message if error else ''}", job_id, error)
    if row.state == "none":
        raise JobNotFoundError(f"job {job_id!r} finished, but it is no longer kept "
                               "(keep_completed trimmed it)")
    return None if row.value is None else part.serializer.loads(row.value)


def _terminal_event(part: QueueCalls, job_id: str, cursor: str, deadline: float | None
                    ) -> Flow[tuple[str, str]]:
    """Block on the partition's stream after ``cursor`` until an entry says that ``job_id``
    completed, died or was cancelled (entries of other jobs are skipped); that kind and the
    entry id read last."""
    key = part.keys.key("events")
    while True:
        wait = math.inf if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            raise ResultTimeoutError(f"job {job_id!r} of queue {part.queue!r} had not "
                                     "finished when the timeout passed")
        for _, entry_id, fields in stream_entries((yield Read({key: cursor}, wait))):
            cursor = entry_id
            kind = text(fields.get(b"event", b""))
            if kind in TERMINAL and text(fields.get(b"id", b"")) == job_id:
                return kind, cursor


# -- queue.events ----------------------------------------------------------------------------

def _cursor(since: object) -> str | None:
    """The entry id to read after for ``since`` (None: the stream's last, read at the start):
    "0" or 0 from the first entry kept, an entry id ("1700000000000-3") after it, an aware
    datetime from that instant on."""
    if since is None:
        return None
    if not isinstance(since, bool) and isinstance(since, int | str) and str(since) == "0":
        return "0-0"
    if isinstance(since, str) and _ENTRY_ID.fullmatch(since):
        return since
    if isinstance(since, datetime) and since.utcoffset() is not None:
        ms = math.ceil(since.timestamp() * 1000)
        return f"{ms - 1}-{_LAST_SEQ}" if ms > 0 else "0-0"
    raise ConfigurationError(f"since= takes None (from now), 0 (every event kept), an entry "
                             f"id such as '1700000000000-0', or an aware datetime; got "
                             f"{since!r:.80}")


def _quiet(block: object) -> float | None:
    """How long a reader waits for the next event: math.inf (block=True), None (False: it
    stops when no event is left), or seconds."""
    if block is True:
        return math.inf
    if block is False:
        return None
    return check_seconds("block", block, high=MAX_DELAY, zero=True)


def _last_id(reply: Any) -> str:
    return text(reply[0][0]) if reply else "0-0"


class EventReader:
    """Reads the events of a queue's partitions in turn of ``read`` flows (see
    ``QueueCore.events``): on one server one XREAD spans every partition; on a cluster (where
    one XREAD cannot span slots) one round trip reads each partition without blocking, then
    blocks on one partition at a time, for at most ``CLUSTER_WAIT`` before the next."""

    def __init__(self, parts: Sequence[QueueCalls], cluster: bool, since: object = None,
                 block: object = True) -> None:
        self.parts = list(parts)
        self.keys = [part.keys.key("events") for part in self.parts]
        self.cluster = cluster and len(self.parts) > 1
        start = _cursor(since)
        self.cursors: list[str] | None = None if start is None else [start] * len(self.parts)
        self.quiet = _quiet(block)
        self._since_event = time.monotonic()
        self._turn = 0

    def read(self) -> Flow[list[Event] | None]:
        """The next events (oldest first within each partition; a read's events of several
        partitions are merged by time), [] if none came within one wait, or None once
        ``block`` says to stop."""
        if self.cursors is None:  # from now: each stream's last entry, read at the start
            self.cursors = yield [Command(("XREVRANGE", key, "+", "-", "COUNT", 1), _last_id)
                                  for key in self.keys]
        wait = self._wait()
        if not self.cluster:
            entries = stream_entries((yield Read(dict(zip(self.keys, self.cursors, strict=True)),
                                                 wait, READ_COUNT)))
        else:
            entries = yield from self._read_apart(wait)
        events = self._advance(entries)
        if events:
            self._since_event = time.monotonic()
            return events
        if self.quiet is None or time.monotonic() - self._since_event >= self.quiet:
            return None
        return []

    def _wait(self) -> float | None:
        """How long the next read may block (None: not at all)."""
        if self.quiet is None:
            return None
        return max(0.001, self.quiet - (time.monotonic() - self._since_event))

    def _read_apart(self, wait: float | None) -> Flow[list[Entry]]:
        """A cluster's read: every partition without blocking (one round trip), then, if
        nothing came, a block on one partition (in turn) for at most ``CLUSTER_WAIT``."""
        assert self.cursors is not None
        found: list[list[Any]] = yield [
            Command(("XRANGE", key, f"({cursor}", "+", "COUNT", READ_COUNT))
            for key, cursor in zip(self.keys, self.cursors, strict=True)]
        entries = [(key, text(entry_id), fields or {})
                   for key, listed in zip(self.keys, found, strict=True)
                   for entry_id, fields in listed]
        if entries or wait is None:
            return entries
        self._turn = (self._turn + 1) % len(self.keys)
        key = self.keys[self._turn]
        return stream_entries((yield Read({key: self.cursors[self._turn]},
                                          min(wait, CLUSTER_WAIT), READ_COUNT)))

    def _advance(self, entries: Iterable[Entry]) -> list[Event]:
        """Events of the entries read, merged by time; each partition's cursor moved on."""
        assert self.cursors is not None
        where = {key: i for i, key in enumerate(self.keys)}
        events = []
        for key, entry_id, fields in entries:
            i = where[key]
            self.cursors[i] = entry_id
            events.append(event_of(self.parts[i].partition, entry_id, fields))
        events.sort(key=lambda e: (*(int(n) for n in e.entry_id.split("-")), e.partition))
        return events
