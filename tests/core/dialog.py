"""Driving a core flow by hand, with no Redis: read the effect it yields, answer it, and check
what it returns. The replies are the Lua scripts' documented replies (their headers)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyqcore.core.calls import Call
from pyqcore.core.dead_letters import DeadLetters
from pyqcore.core.effects import Command, Flow
from pyqcore.core.queue import QueueCore
from pyqcore.core.registry import Registry
from pyqcore.job import encode_record
from pyqcore.serializer import MSGPACK
from pyqcore.settings import QueueSettings


class Dialog:
    """One flow, stepped by the test: ``effect`` is what it asks for now. An operation that
    is a bare ``Call`` is a flow of that one call, after which its ``done`` runs, as the
    drivers run it."""

    def __init__(self, flow: Flow[Any] | Call[Any]) -> None:
        self.steps = Steps(alone(flow) if isinstance(flow, Call) else flow)

    @property
    def effect(self) -> Any:
        assert self.steps.running, f"the flow has returned {self.steps.result!r}"
        return self.steps.effect

    def script(self) -> Call[Any]:
        """The one script call asked for now."""
        assert isinstance(self.effect, Call), self.effect
        return self.effect

    def round(self) -> list[Any]:
        """The round trip (a list of calls and commands) asked for now."""
        assert isinstance(self.effect, list), self.effect
        return self.effect

    def answer(self, reply: Any) -> None:
        """Answer the effect with a raw reply: each call parses its own (a list for a round,
        where an exception stands for an error reply, as a pipeline hands it over)."""
        effect = self.effect
        if isinstance(effect, list):
            self.steps.send([c.error_reply(r) if isinstance(r, Exception) else c.parse(r)
                             for c, r in zip(effect, reply, strict=True)])
        elif isinstance(effect, Call | Command):
            self.steps.send(effect.parse(reply))
        else:
            self.steps.send(reply)

    def fail(self, error: BaseException) -> None:
        """Performing the effect raised ``error``."""
        self.steps.throw(error)

    @property
    def result(self) -> Any:
        assert not self.steps.running, f"the flow still asks for {self.steps.effect!r}"
        return self.steps.result


def alone(call: Call[Any]) -> Flow[Any]:
    """A bare call performed as a driver does: its reply, then its ``done``."""
    try:
        return (yield call)
    finally:
        if call.done is not None:
            call.done()


def names(calls: list[Any]) -> list[str]:
    """The script name (or the command name) of each call of a round trip."""
    return [c.script.name if isinstance(c, Call) else str(c.args[0]) for c in calls]


def record(payload: Any, enqueued_ms: int = 1_000) -> bytes:
    """A job record as the jobs hash stores it."""
    return encode_record(MSGPACK, payload, None, enqueued_ms, 1 << 20)


def reserved(jobs: list[tuple[str, bytes, int]], *, token: str = "ab" * 8,
             deadline_ms: int = 9_000, wait_ms: int = -1, throttle: int = 0) -> list[Any]:
    """reserve's reply: {0, token, deadline_ms, wait_ms, throttle, id, record, attempt, ...}."""
    flat: list[Any] = [0, token.encode(), deadline_ms, wait_ms, throttle]
    for job_id, rec, attempt in jobs:
        flat += [job_id.encode(), rec, attempt]
    return flat


def room(waiting: int = 0, *, used: int = 1 << 20, maxmemory: int = 0,
         server: bytes = b"a1") -> list[Any]:
    """room's reply: {0, waiting, used_memory, maxmemory, run_id}."""
    return [0, waiting, used, maxmemory, server]


def server_time(ms: int = 1_800_000_000_000) -> list[bytes]:
    """TIME's raw reply: seconds and microseconds."""
    return [str(ms // 1000).encode(), str(ms % 1000 * 1000).encode()]


def announced(partitions: int = 1, server_ms: int = 1_800_000_000_000) -> list[Any]:
    """Replies to the announcement round (SADD, [HSETNX], HGET, TIME)."""
    recorded = None if partitions == 1 else str(partitions).encode()
    now = server_time(server_ms)
    return [1, recorded, now] if partitions == 1 else [1, 1, recorded, now]


class Steps:
    """A flow stepped one effect at a time: ``effect`` is what it asks for while
    ``running``; ``send`` answers it, ``throw`` says performing it raised."""

    __slots__ = ("_flow", "effect", "result", "running")

    def __init__(self, flow: Flow[Any]) -> None:
        self._flow = flow
        self.running = True
        self.result: Any = None
        self.effect: Any = None
        self._resume(flow.send, None)

    def send(self, value: Any) -> None:
        """Hand the flow the result of ``effect``."""
        self._resume(self._flow.send, value)

    def throw(self, error: BaseException) -> None:
        """Raise ``error`` inside the flow, where it yielded ``effect``."""
        self._resume(self._flow.throw, error)

    def _resume(self, resume: Callable[[Any], Any], value: Any) -> None:
        try:
            self.effect = resume(value)
        except StopIteration as done:
            self.running, self.result, self.effect = False, done.value, None


def dead_letters(partitions: int = 1, queues: tuple[str, ...] = ("q",)) -> DeadLetters:
    """The DLQ flows over registered queues named ``queues``, redrive bound 2 (on the server's
    clock: the scripts turn ages into cutoffs)."""
    registry = Registry("pyqcore")
    for name in queues:
        registry.add(QueueCore(QueueSettings(name=name, partitions=partitions), cluster=False))
    return DeadLetters(registry, max_redrives=2)


def dead_rows(*pairs: tuple[str, int]) -> list[object]:
    """peek_dead's reply: {0, id, died_ms, record, meta, error, ...}."""
    flat: list[object] = [0]
    for job_id, died in pairs:
        flat += [job_id.encode(), died, record(job_id), b"1:0", b'{"type": "E", "message": "m"}']
    return flat
