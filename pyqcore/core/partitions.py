"""A logical queue over N partitions, each its own hash tag (``{Q#i}``) and so its own slot:
which partition a new job goes to, which one a worker leases from next, and how replies of
several partitions combine. Sans-I/O, like ``core``; one partition (the default) is the plain
queue ``{Q}``.

Ordering: FIFO holds within a partition, so jobs that share a ``partition_key`` (or a custom
job id) keep their order of first delivery; across partitions there is no global order.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from pyqcore.core.calls import Call, NewJob, QueueCalls, Settled, Shared
from pyqcore.errors import ConfigurationError, QueueFullError
from pyqcore.job import Job
from pyqcore.limits import UNRANKED, Rank
from pyqcore.settings import QueueSettings


class Partitions:
    """The script calls of every partition of one queue, and how jobs map onto them."""

    def __init__(self, settings: QueueSettings) -> None:
        count = settings.partitions
        self.parts = ([QueueCalls(settings)] if count == 1
                      else [QueueCalls(settings, i) for i in range(count)])
        self._producer = itertools.count()  # round robin for jobs without a key
        self._reader = itertools.count()  # where the next reserve starts

    def __len__(self) -> int:
        return len(self.parts)

    def of(self, job: Job) -> QueueCalls:
        """The calls of the partition holding ``job``."""
        return self.parts[job.partition]

    def route(self, job_ids: Sequence[str | None], keys: Sequence[str | None]) -> list[int]:
        """The partition of each new job: by ``partition_key``, else by custom job id (so an
        idempotent add always lands where its id lives), else round robin."""
        for key in keys:
            if key is not None and (not isinstance(key, str) or not key):
                raise ConfigurationError(f"partition_key must be a non-empty str or None, got "
                                         f"{key!r:.80}")
        n = len(self.parts)
        if n == 1:
            return [0] * len(job_ids)
        start = next(self._producer)
        routes = []
        for i, (job_id, key) in enumerate(zip(job_ids, keys, strict=True)):
            by = key if key is not None else job_id
            routes.append((start + i) % n if by is None else _hash(by) % n)
        return routes

    def add(
        self, payloads: Sequence[Any], contexts: Sequence[Any], shared: Shared,
        job_ids: Sequence[str | None], keys: Sequence[str | None], *, timeout: int = 0,
        rank: Rank = UNRANKED,
    ) -> tuple[list[Call[list[str] | QueueFullError]], list[list[int]], list[int]]:
        """Enqueue calls for every partition a job goes to (each encodes its records before
        anything is sent), and, per call, the positions of its jobs in the caller's order and
        its partition. Jobs of a ``rank.group`` without a partition key go where the group's
        name routes."""
        if rank.group is not None:
            keys = [rank.group if key is None else key for key in keys]
        if len(self.parts) == 1:
            self.route(job_ids, keys)  # checks the keys
            one = self.parts[0].add(payloads, contexts, shared, job_ids, timeout=timeout,
                                    rank=rank)
            step = self.parts[0].settings.batch_size
            return one, [list(range(i, min(i + step, len(payloads))))
                         for i in range(0, len(payloads), step)], [0] * len(one)
        routes = self.route(job_ids, keys)
        calls: list[Call[list[str] | QueueFullError]] = []
        positions: list[list[int]] = []
        owners: list[int] = []
        for p, part in enumerate(self.parts):
            mine = [i for i, r in enumerate(routes) if r == p]
            if not mine:
                continue
            step = part.settings.batch_size
            calls += part.add([payloads[i] for i in mine], [contexts[i] for i in mine], shared,
                              [job_ids[i] for i in mine], timeout=timeout, rank=rank)
            positions += [mine[i : i + step] for i in range(0, len(mine), step)]
            owners += [p] * (len(calls) - len(owners))
        return calls, positions, owners

    def add_one(
        self, payload: Any, context: Any, shared: Shared, job_id: str | None, key: str | None,
        *, timeout: int = 0,
    ) -> NewJob:
        """One job, checked and encoded, for the partition ``route`` gives it."""
        if key is None and len(self.parts) == 1:
            return self.parts[0].add_one(payload, context, shared, job_id, timeout=timeout)
        part = self.parts[self.route([job_id], [key])[0]]
        return part.add_one(payload, context, shared, job_id, timeout=timeout)

    def reading_order(self) -> list[QueueCalls]:
        """All partitions, starting one further along at every call, so none is starved."""
        start = next(self._reader) % len(self.parts)
        return self.parts[start:] + self.parts[:start]

    def grouped(self, jobs: Iterable[Job]) -> list[tuple[QueueCalls, list[Job]]]:
        """Jobs grouped by the partition holding them."""
        groups: dict[int, list[Job]] = {}
        for job in jobs:
            if not 0 <= job.partition < len(self.parts):
                raise ConfigurationError(f"job {job.id} names partition {job.partition}, but "
                                         f"the queue has {len(self.parts)}")
            groups.setdefault(job.partition, []).append(job)
        return [(self.parts[p], group) for p, group in sorted(groups.items())]


def merge_settled(replies: Sequence[Settled]) -> Settled:
    """One Settled for the replies of several partitions."""
    return Settled(sum(r.count for r in replies), [i for r in replies for i in r.refused])


def _hash(key: str) -> int:
    """A stable hash (the same in every process, unlike ``hash``) of a routing key."""
    return zlib.crc32(key.encode())
