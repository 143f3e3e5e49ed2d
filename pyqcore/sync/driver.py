"""The sync driver: performs the core's effects (``pyqcore.core.effects``) on a redis-py client,
blocking. Script calls go as EVALSHA; on NOSCRIPT (a restart, a failover or ``SCRIPT FLUSH``)
the source goes with EVAL, which cannot miss and refills the cache of the node that runs it
(SCRIPT LOAD then EVALSHA could race a second flush).

On Redis Cluster, EVALSHA is routed by its KEYS (every KEYS entry of a call carries the queue's
hash tag, so a call names exactly one slot), and a script is loaded on the primary that owns
that slot: each primary has its own script cache, and only the owner's matters for the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from pyqcore.core.calls import Call
from pyqcore.core.driving import Driving, command_of, eval_args, parse_replies
from pyqcore.core.effects import Block, Command, Flow, Pause, Turn
from pyqcore.core.failures import raise_typed

T = TypeVar("T")
Client = redis.Redis | RedisCluster


class ThreadWaiter:
    """The sync driver's waiting primitive (``pyqcore.core.effects.Waiter``): a lock taken at
    birth, which ``wait`` blocks on until another thread's ``wake`` releases it."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        self._lock.release()

    def wait(self) -> None:
        self._lock.acquire()


class SyncDriver(Driving):
    """Runs flows on a redis-py client (standalone or cluster), blocking."""

    client: Client
    new_waiter = ThreadWaiter

    def run(self, operation: Call[T] | Flow[T]) -> T:
        """Perform an operation's effects until it returns; its result. Redis unreachable, or
        refusing the credentials, raises its pyqcore error (``raise_typed``)."""
        try:
            if type(operation) is Call:
                return self.call(operation)
            return self.drive(operation, self.perform)  # type: ignore[arg-type]
        except Exception as exc:  # what left the operation: a Redis failure becomes typed
            raise_typed(exc)

    @staticmethod
    def drive(flow: Flow[T], perform: Callable[[Any], Any]) -> T:
        """Run ``flow``, performing each effect with ``perform`` (whose exceptions are thrown
        back into the flow)."""
        send = flow.send
        try:
            effect = send(None)
            while True:
                try:
                    value = perform(effect)
                except BaseException as exc:  # an interrupt too, so the flow can clean up
                    effect = flow.throw(exc)
                else:
                    effect = send(value)
        except StopIteration as done:
            result: T = done.value
            return result

    def call(self, call: Call[T]) -> T:
        """Send one script call and parse its reply, or its error (``Call.error_reply``);
        then its ``done``, if it has one, whatever happened."""
        try:
            try:
                try:  # EVAL with the source on NOSCRIPT
                    reply = self.client.execute_command(  # type: ignore[no-untyped-call]
                        *command_of(call))
                except NoScriptError:
                    reply = self.client.execute_command(  # type: ignore[no-untyped-call]
                        *eval_args(call))
            except ResponseError as exc:
                return call.error_reply(exc)
            return call.parse(reply)
        finally:
            if call.done is not None:
                call.done()

    def call_all(self, calls: Sequence[Call[Any] | Command]) -> list[Any]:
        """Send several calls in one round trip (each stays atomic on its own), in order."""
        if len(calls) == 1 and isinstance(calls[0], Call):
            return [self.call(calls[0])]
        replies = self.pipeline_of(calls).execute(raise_on_error=False)
        results, missing = parse_replies(calls, replies)
        for i, call in missing:
            results[i] = self.call(call)
        return results

    def command(self, command: Command) -> Any:
        """Send one plain command and parse its reply."""
        reply = self.client.execute_command(*command.args, **command.options)  # type: ignore[no-untyped-call]
        return command.parse(reply)

    def block(self, block: Block) -> Any:
        """BLPOP on the wake lists."""
        return self.client.blpop(block.keys, block.timeout)

    @staticmethod
    def turn(turn: Turn) -> None:
        """Block until another thread wakes the waiter (a coalesced add's turn)."""
        if not isinstance(turn.waiter, ThreadWaiter):
            raise TypeError(f"the sync driver waits on a ThreadWaiter, not {turn.waiter!r}")
        turn.waiter.wait()

    @staticmethod
    def pause(pause: Pause) -> bool:
        """Sleep, or wait on the flag (a threading.Event) for at most that long."""
        if pause.until is None:
            time.sleep(pause.seconds)
            return False
        if not isinstance(pause.until, threading.Event):
            raise TypeError(f"the sync driver waits on threading.Event, not {pause.until!r}")
        return pause.until.wait(pause.seconds)
