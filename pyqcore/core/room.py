"""Whether a queue has room for an add of several enqueue calls, checked before its first write.

One enqueue call is all-or-nothing: its ``max_ready`` check comes before its first write, and
Redis (7) refuses a script's first write when ``used_memory`` is above ``maxmemory`` but never
stops a script that has written. A batch of several calls (more than ``batch_size`` jobs, or
jobs for several partitions) could be cut between two of them, so its flow first reads every
partition it writes to (``lua/room.lua``: the jobs waiting, the server's memory) in one round
trip, and refuses with QueueFullError, before anything is written, a batch that would pass
``max_ready`` or would not fit under ``maxmemory`` by the estimate below. A producer (or
anything else writing to that Redis) that fills it between this read and the calls can still
make a later call refused: then ``QueueFullError.ids`` says which jobs were added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyqcore.core.calls import Call, QueueCalls, Room
from pyqcore.core.effects import Flow
from pyqcore.errors import QueueFullError

# What storing a job costs, measured with redis-server 7.0 (jemalloc): the record rounded up to
# its allocation size class (at most 25% more), plus 70-170 bytes for its hash entry, list
# entry and id.
RECORD_FACTOR = 1.25
PER_JOB_BYTES = 192
# What a call holds as it starts, when Redis decides whether it may write: its arguments, as
# the command's argument vector (measured: a call of 1,000 records is let in once maxmemory is
# above what Redis uses by 1.03 to 1.22 times its bytes for records of 200 B to 50 KB, and by
# about 50 bytes more per record for tiny ones).
RUNNING_FACTOR = 1.5
RUNNING_PER_JOB = 64


@dataclass
class Need:
    """What the calls of an add ask of one server, counted in the order they are sent: jobs,
    bytes stored, and the most any call needs as it starts (what the calls before it stored,
    plus its own arguments)."""

    jobs: int = 0
    stored: int = 0
    peak: int = 0

    def add(self, call: Call[Any], jobs: int) -> None:
        """Count the next enqueue call, of ``jobs`` jobs."""
        size = sum(len(arg) for arg in call.args if isinstance(arg, bytes | str))
        self.peak = max(self.peak,
                        self.stored + round(RUNNING_FACTOR * size) + RUNNING_PER_JOB * jobs)
        self.jobs += jobs
        self.stored += round(RECORD_FACTOR * size) + PER_JOB_BYTES * jobs

    @property
    def most(self) -> int:
        """The most memory the add takes at any moment."""
        return max(self.peak, self.stored)


def check_room(
    name: str, parts: Sequence[QueueCalls], calls: Sequence[Call[Any]],
    positions: Sequence[Sequence[int]], owners: Sequence[int], *, max_ready: int | None,
) -> Flow[None]:
    """Read the room of every partition the calls write to (one round trip) and raise
    QueueFullError, with nothing written, if the batch would not fit."""
    involved = list(dict.fromkeys(owners))
    rooms = dict(zip(involved, (yield [parts[p].room() for p in involved]), strict=True))
    reason = refusal(name, rooms, calls, positions, owners, max_ready=max_ready,
                     partitioned=len(parts) > 1)
    if reason:
        raise QueueFullError(f"queue full: {reason}; nothing was added",
                             [None] * sum(len(where) for where in positions))


def refusal(
    name: str, rooms: dict[int, Room], calls: Sequence[Call[Any]],
    positions: Sequence[Sequence[int]], owners: Sequence[int], *, max_ready: int | None,
    partitioned: bool = False,
) -> str | None:
    """Why the calls do not fit: a partition would pass ``max_ready``, or a server's memory
    (its partitions' calls counted together, in order) would pass its ``maxmemory``; None if
    they fit."""
    jobs: dict[int, int] = {}
    servers: dict[str, tuple[Room, Need]] = {}
    for call, where, part in zip(calls, positions, owners, strict=True):
        jobs[part] = jobs.get(part, 0) + len(where)
        room = rooms[part]
        servers.setdefault(room.server, (room, Need()))[1].add(call, len(where))
    for part, count in jobs.items():
        room = rooms[part]
        if max_ready is not None and room.waiting + count > max_ready:
            which = f"partition {part} of queue {name!r}" if partitioned else f"queue {name!r}"
            return (f"{which} has {room.waiting} jobs waiting (ready + delayed), and {count} "
                    f"more would pass max_ready={max_ready}")
    for room, need in servers.values():
        # maxmemory 0: no limit; -1: INFO is denied to this client, nothing to check
        if room.maxmemory > 0 and room.used_memory + need.most > room.maxmemory:
            return (f"{need.jobs} jobs of queue {name!r} need about {mb(need.most)} at the "
                    f"most, and Redis uses {mb(room.used_memory)} of its maxmemory "
                    f"{mb(room.maxmemory)}")
    return None


def mb(size: int) -> str:
    """Bytes as mebibytes, for a message."""
    return f"{size / 2**20:.1f} MiB"
