"""Observers of every handler run (worker metrics, tracing spans), called by the slot loop
around each ``Job`` / ``Batch`` effect. A worker with none has ``Crew.hooks = None`` and pays
one None check per job; the observers' libraries are imported only when one is asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from pyqcore.job import Job


class RunObserver(Protocol):
    """Called around one run of a handler: ``start`` just before it (a job, or a leased
    batch), ``end`` just after, with what it raised per job id (empty: every job succeeded)."""

    def start(self, jobs: Sequence[Job]) -> object: ...

    def end(self, handle: object, jobs: Sequence[Job],
            failed: Mapping[str, BaseException]) -> None: ...


class Observers:
    """Several observers as one: each gets its own handle back."""

    def __init__(self, observers: Sequence[RunObserver]) -> None:
        self.observers = tuple(observers)

    def start(self, jobs: Sequence[Job]) -> object:
        return [observer.start(jobs) for observer in self.observers]

    def end(self, handle: object, jobs: Sequence[Job],
            failed: Mapping[str, BaseException]) -> None:
        assert isinstance(handle, list)
        for observer, own in zip(self.observers, handle, strict=True):
            observer.end(own, jobs, failed)


def combined(observers: Sequence[RunObserver]) -> RunObserver | None:
    """The slot loop's hooks: None for no observer, the one itself, or all of them as one."""
    if not observers:
        return None
    return observers[0] if len(observers) == 1 else Observers(observers)
