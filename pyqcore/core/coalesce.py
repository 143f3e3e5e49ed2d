"""Coalescing: concurrent single operations on one object share one script call.

Many callers adding jobs to one queue object at once (asyncio tasks on one loop, threads
sharing a sync queue) would each take a connection and a round trip; a pool of 100 connections
refuses the 101st. A ``Coalescer`` lets at most ``in_flight`` calls be in flight at once: a
caller that finds fewer sends its own item alone (a lone caller never waits: no timer, nothing
held back), and the items that arrive while ``in_flight`` calls are in flight wait, then go
together in the next call, sent when one of those returns by the first of them (the
*leader*), which hands every other waiter its own result. Two calls in flight (the queue's
setting) let the client's work on one overlap Redis's work on the other, and let two threads
add as fast as they did with a connection each. Only items with the same ``key`` share a call
(a batch is one script call, never a pipeline of several, so a call that fails fails exactly
the callers it carried); a call carries at most ``limit``.

A lone caller's item, once it can go as a bare ``Call`` (a queue already announced), is that
call itself, not a flow: the driver sends it and then runs its ``done``, which frees its place
(no generator to drive: a lone add costs what one plain script call does).

Written once for both drivers: a flow waits for its turn by yielding ``Turn(waiter)``, where
the waiter comes from the driver's ``new_waiter`` (a lock a thread blocks on, a future a task
awaits) and is woken by the flow that hands it a result or the lead. Each caller checks and
encodes its own item before it joins, so a bad item fails only its caller.

A waiter that leaves early (a cancelled task, an interrupt) is taken out of the queue if it
was still waiting, and passes the lead on if it had just been given it. A leader interrupted
while its call is in flight cannot know whether Redis ran it: the callers it carried get
``AddInterruptedError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from pyqcore.core.calls import Call
from pyqcore.core.effects import Flow, Turn, Waiter, flow_of
from pyqcore.errors import AddInterruptedError

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")


class Flag:
    """The waiter of flows driven by hand (the core's tests): it only records its wake-up."""

    __slots__ = ("woken",)

    def __init__(self) -> None:
        self.woken = False

    def wake(self) -> None:
        self.woken = True


class Entry(Generic[I, R]):
    """One waiting caller: its item, its waiter, and what it gets: the batch it leads, or its
    result or error."""

    __slots__ = ("error", "item", "lead", "result", "waiter")

    def __init__(self, item: I, waiter: Waiter) -> None:
        self.item = item
        self.waiter = waiter
        self.lead: list[Entry[I, R]] | None = None
        self.result: R | None = None
        self.error: BaseException | None = None

    def outcome(self) -> R:
        """The result handed to this caller, or the error it raises."""
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class Coalescer(Generic[I, R]):
    """At most one call in flight; items that arrive meanwhile go together in the next one (see
    the module docstring). ``send(items)`` is the flow of one call: each item's result, in
    order, or an exception for all of them (a bare ``Call``, usually)."""

    def __init__(self, send: Callable[[list[I]], Call[list[R]] | Flow[list[R]]],
                 new_waiter: Callable[[], Waiter], *, limit: int,
                 key: Callable[[I], Hashable], in_flight: int = 1) -> None:
        self._send = send
        self._new_waiter = new_waiter
        self._limit = limit
        self._key = key
        self._lock = threading.Lock()  # threads share a sync queue; free on one event loop
        self._most = in_flight
        self._sending = 0  # calls in flight
        self._waiting: dict[Hashable, list[Entry[I, R]]] = {}  # by key, in order of arrival

    def submit(self, item: I, alone: Callable[[I], Call[R]] | None = None
               ) -> Call[R] | Flow[R]:
        """The operation of one caller's item: sent now if fewer than ``in_flight`` calls are
        in flight, else with the items that arrived meanwhile; its result. ``alone`` builds the
        item's own call, if it can go as a bare ``Call``: then a lone item is that call, whose
        ``done`` frees its place (no flow to drive: a lone add costs what a plain call does)."""
        # (An unlocked look first: a caller that will wait takes the lock once, in _flow.)
        if alone is not None and self._sending < self._most:
            lock = self._lock
            lock.acquire()  # not ``with``: every add's path, where ``with`` costs twice as much
            lone = self._sending < self._most
            if lone:
                self._sending += 1
            lock.release()
            if not lone:
                return self._flow(item)
            try:
                call = alone(item)
            except BaseException:
                self._pass_on()
                raise
            call.done = self._pass_on
            return call
        return self._flow(item)

    def _flow(self, item: I) -> Flow[R]:
        """The flow of one caller's item: sent alone if fewer than ``in_flight`` calls are in
        flight (through ``send``, a flow the first time), else it waits for its turn."""
        lock = self._lock
        lock.acquire()
        try:
            lone = self._sending < self._most
            if lone:
                self._sending += 1
            else:
                entry: Entry[I, R] = Entry(item, self._new_waiter())
                self._waiting.setdefault(self._key(item), []).append(entry)
        finally:
            lock.release()
        if lone:
            try:
                operation = self._send([item])
                results: list[R] = (yield operation) if isinstance(operation, Call) else \
                    (yield from operation)
            finally:
                self._pass_on()
            return results[0]
        try:
            yield Turn(entry.waiter)
        except BaseException:
            self._leave(entry)
            raise
        if entry.lead is None:
            return entry.outcome()
        try:
            yield from self._lead(entry.lead)
        finally:
            self._pass_on()
        return entry.outcome()

    def _lead(self, batch: list[Entry[I, R]]) -> Flow[None]:
        """Send the batch's items in one call and hand each waiter its result (the leader,
        ``batch[0]``, reads its own from its entry)."""
        try:
            results = yield from flow_of(self._send([e.item for e in batch]))
        except Exception as exc:
            for e in batch:
                e.error = exc
        except BaseException:
            interrupted = AddInterruptedError(
                "the call carrying this add was interrupted (its sender was cancelled): the "
                "job may or may not be stored; with a job_id, adding it again is safe")
            for e in batch[1:]:
                e.error = interrupted
            raise
        else:
            for e, result in zip(batch, results, strict=True):
                e.result = result
        finally:
            for e in batch[1:]:
                e.waiter.wake()

    def _pass_on(self) -> None:
        """A call in flight is done: hand the next batch to its leader, or one less is in
        flight."""
        lock = self._lock
        lock.acquire()
        try:
            if not self._waiting:
                self._sending -= 1
                return
            batch = self._next_batch()
            batch[0].lead = batch
        finally:
            lock.release()
        batch[0].waiter.wake()

    def _next_batch(self) -> list[Entry[I, R]]:
        """The longest-waiting key's items, at most ``limit`` (the lock is held)."""
        key = next(iter(self._waiting))
        group = self._waiting[key]
        if len(group) <= self._limit:
            del self._waiting[key]
            return group
        batch = group[: self._limit]
        del group[: self._limit]
        return batch

    def _leave(self, entry: Entry[I, R]) -> None:
        """A waiter leaves before its turn: out of the queue if still in it; if it had just
        been handed the lead, the lead goes to the next of its batch (or the next batch)."""
        with self._lock:
            key = self._key(entry.item)
            group = self._waiting.get(key, [])
            if entry in group:
                group.remove(entry)
                if not group:
                    del self._waiting[key]
                return
            batch, entry.lead = entry.lead, None
            if batch is None:
                return  # its item is in a call in flight: its result will go unread
            rest = batch[1:]
            if rest:
                rest[0].lead = rest
        if rest:
            rest[0].waiter.wake()
        else:
            self._pass_on()

    def __repr__(self) -> str:
        waiting = sum(len(group) for group in self._waiting.values())
        return f"<Coalescer in flight={self._sending} waiting={waiting}>"

