"""Driving the asyncio API from sync-style test code, so one behaviour test runs on both drivers.

A test asks for ``api`` (``tests/conftest.py``) and reads like the sync API:
``api.BaseQueue(client, name="q", handler=h)``, ``api.QueueManager(client, clock=clock)``,
``api.Worker(queue, ...)``, ``class Emails(api.BaseQueue): ...``. On the sync driver those are
``pyqcore``'s own classes. On the asyncio driver (``asyncio_api``) they are subclasses of
``pyqcore.asyncio``'s, whose construction from test code

- swaps the sync client for its async twin (``async_twin``: a ``redis.asyncio`` client of the
  same deployment with the same connection options, one per sync client);
- builds the object on the test's event loop (``LoopThread``: one loop in a background thread
  per test, closed at teardown, also on failure);
- hands back a ``Blocking`` proxy: a method that returns a coroutine is run on that loop until
  done (``asyncio.run_coroutine_threadsafe(...).result()``), an async context manager becomes a
  sync one, an ``asyncio.Event`` attribute (``worker.stop``) becomes a ``ThreadSafeEvent``, and
  the API objects it returns (queues, workers, ``manager.dead_letter_queue``, the driver) are
  proxied too (the same proxy for the same object, so ``is`` holds).

Several test threads may call at once (a worker's ``process`` in a thread while the test adds):
every call runs on the one loop, as in a real asyncio application. The library itself never
sees a proxy: arguments are unwrapped, and a class built on the loop thread (the manager's
``register``) is built plainly. A blocking call from the loop thread (an ``async def`` handler
calling a proxy) would deadlock, so it raises instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster

import pyqcore
import pyqcore.asyncio
from pyqcore.api.dead_letter import DeadLetterApi
from pyqcore.api.manager import ManagerApi
from pyqcore.api.queue import QueueApi
from pyqcore.asyncio.driver import AsyncClient, AsyncDriver
from pyqcore.core.worker import WorkerBase
from pyqcore.sync.driver import Client, SyncDriver

T = TypeVar("T")

CALL_TIMEOUT = 120.0  # no call of a test takes this long: past it, a hang fails the test
SHUTDOWN_TIMEOUT = 10.0  # for the handler threads (asyncio.to_thread) to finish at teardown

# The connection options a sync client's twin takes over (the rest are driver-specific objects:
# retry policies, connect callbacks, pool handlers).
PORTABLE_OPTIONS = ("username", "password", "socket_timeout", "socket_connect_timeout",
                    "socket_keepalive", "decode_responses", "encoding", "encoding_errors",
                    "client_name", "health_check_interval", "protocol")

# Objects whose methods a test calls: proxied, so their coroutines are run to completion.
PROXIED = (QueueApi, ManagerApi, DeadLetterApi, WorkerBase, AsyncDriver)


class LoopThread:
    """An asyncio event loop running forever in a daemon thread, until ``close``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-asyncio-loop",
                                       daemon=True)
        self.thread.start()
        self._started.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coroutine`` on the loop; block until its result (or exception)."""
        if self.in_loop_thread():
            coroutine.close()
            raise RuntimeError("a blocking call from the event loop's own thread would "
                               "deadlock: await the asyncio API there instead")
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:  # TimeoutError itself from 3.11 on:
            if future.done():  # the call raised one (ResultTimeoutError)
                raise
            future.cancel()
            raise TimeoutError(f"a call on the test's event loop took over {timeout} s") from None

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``function`` on the loop (awaiting what it returns, if awaitable)."""

        async def on_loop() -> Any:
            result = function(*args, **kwargs)
            return await result if _is_pending(result) else result

        return self.run(on_loop())

    def close(self) -> None:
        """Cancel what still runs (a worker a failed test left behind), wait for the handler
        threads, stop the loop and close it."""
        if self.loop.is_closed():
            return
        try:
            self.run(_wind_down(), timeout=CALL_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(SHUTDOWN_TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()


def _is_pending(value: Any) -> bool:
    """Whether ``value`` is a result still to be awaited: a coroutine or a future. (Not any
    awaitable: awaiting a redis.asyncio RedisCluster initializes it.)"""
    return asyncio.iscoroutine(value) or asyncio.isfuture(value)


async def _wind_down() -> None:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    try:
        await asyncio.wait_for(loop.shutdown_default_executor(), SHUTDOWN_TIMEOUT)
    except asyncio.TimeoutError:
        raise RuntimeError("a handler thread (asyncio.to_thread) was still running "
                           f"{SHUTDOWN_TIMEOUT} s after the test") from None


async def async_twin(client: Client) -> AsyncClient:
    """A ``redis.asyncio`` client of the deployment ``client`` talks to, with its connection
    options (socket timeout, decode_responses, credentials, ...): a ``RedisCluster`` for a
    cluster client, a client of the same sentinels' primary for a Sentinel-managed one. It has
    served a PING, as an application's client usually has before its first queue (a used
    cluster client routes some commands differently from a fresh one), if the server answered
    it: a test of a server that refuses the client gets its twin all the same."""
    kwargs = client.get_connection_kwargs()
    options = {name: kwargs[name] for name in PORTABLE_OPTIONS if name in kwargs}
    if "retry" not in kwargs and not isinstance(client, RedisCluster):
        # made from a URL or by Sentinel: its connections never retry; nor do the twin's
        options["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)
    twin: AsyncClient
    pool = getattr(client, "connection_pool", None)
    if isinstance(client, RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        twin = redis.asyncio.cluster.RedisCluster(host=node.host, port=node.port, **options)
    elif isinstance(pool, redis.sentinel.SentinelConnectionPool):
        manager = pool.sentinel_manager
        sentinels = [(s.get_connection_kwargs()["host"], s.get_connection_kwargs()["port"])
                     for s in manager.sentinels]
        twin = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            sentinels, min_other_sentinels=manager.min_other_sentinels,
            sentinel_kwargs=manager.sentinel_kwargs,
        ).master_for(pool.service_name, db=kwargs.get("db", 0), **options)
    else:
        twin = redis.asyncio.Redis(host=kwargs["host"], port=kwargs["port"],
                                   db=kwargs.get("db", 0), **options)
    with contextlib.suppress(redis.RedisError):
        await twin.ping()
    return twin


class Harness:
    """One test's asyncio driving: its loop, its clients' async twins, and its proxies."""

    def __init__(self) -> None:
        self.loop = LoopThread()
        self._twins: dict[int, tuple[Client, AsyncClient]] = {}
        self._proxies: dict[int, tuple[object, Any]] = {}

    def twin(self, client: Client) -> AsyncClient:
        """The async twin of ``client`` (the same one each time: a queue's first-use checks
        are per client)."""
        known = self._twins.get(id(client))
        if known is None:
            known = self._twins[id(client)] = (client, self.loop.call(async_twin, client))
        return known[1]

    def wrap(self, value: Any) -> Any:
        """What a test gets for ``value``: a proxy for an API object or an asyncio.Event (the
        same one each time), a dict of them wrapped, anything else as is."""
        if isinstance(value, Blocking | ThreadSafeEvent):
            return value
        if isinstance(value, (*PROXIED, asyncio.Event)):
            known = self._proxies.get(id(value))
            if known is None:
                proxy = (Blocking(value, self) if isinstance(value, PROXIED)
                         else ThreadSafeEvent(value, self))
                known = self._proxies[id(value)] = (value, proxy)
            return known[1]
        if type(value) is dict and any(isinstance(v, PROXIED) for v in value.values()):
            return {key: self.wrap(v) for key, v in value.items()}
        if inspect.isasyncgen(value):  # queue.events(): iterated step by step on the loop
            return self._iterate(value)
        if _is_pending(value):
            raise TypeError(f"{value!r} escaped the harness unawaited")
        return value

    def _iterate(self, values: Any) -> Iterator[Any]:
        """An async generator as a sync iterator: each step awaited on the loop; closed on the
        loop when the test stops iterating."""

        async def step() -> tuple[bool, Any]:
            try:
                return True, await values.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, value = self.loop.run(step())
                if not more:
                    return
                yield value
        finally:
            self.loop.run(values.aclose())

    def unwrap(self, value: Any) -> Any:
        """What the library gets for ``value``: the object behind a proxy; an async twin for
        a sync client."""
        if isinstance(value, Blocking):
            return object.__getattribute__(value, "_target")
        if isinstance(value, ThreadSafeEvent):
            return value.event
        if isinstance(value, Client):
            return self.twin(value)
        return value

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function`` called on the loop with unwrapped arguments: its (awaited) result
        wrapped, an async context manager as a sync one."""
        args = tuple(self.unwrap(a) for a in args)
        kwargs = {name: self.unwrap(v) for name, v in kwargs.items()}

        async def on_loop() -> Any:
            result = function(*args, **kwargs)
            return await result if _is_pending(result) else result

        result = self.loop.run(on_loop())
        if hasattr(result, "__aenter__") and not hasattr(result, "__enter__"):
            return self._sync_context(result)
        return self.wrap(result)

    @contextmanager
    def _sync_context(self, manager: Any) -> Iterator[Any]:
        entered = self.wrap(self.loop.run(manager.__aenter__()))
        try:
            yield entered
        except BaseException as exc:
            if not self.loop.run(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self.loop.run(manager.__aexit__(None, None, None))

    def close(self) -> None:
        """Close the twins and the loop (what still runs on it is cancelled first)."""
        try:
            if self._twins and not self.loop.loop.is_closed():
                twins = [twin for _, twin in self._twins.values()]
                self.loop.run(_close_all(twins), timeout=SHUTDOWN_TIMEOUT)
        finally:
            self._twins.clear()
            self._proxies.clear()
            self.loop.close()


async def _close_all(clients: list[AsyncClient]) -> None:
    await asyncio.gather(*(_close(client) for client in clients), return_exceptions=True)


async def _close(client: AsyncClient) -> None:
    """Close ``client``, and the connections to the sentinels of a Sentinel-managed one."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


class Blocking:
    """A blocking view of an asyncio API object (see the module docstring). ``isinstance``
    sees the object's class, so ``isinstance(manager.get_queue("emails"), Emails)`` holds."""

    __slots__ = ("_harness", "_target")

    def __init__(self, target: Any, harness: Harness) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_harness", harness)

    @property  # type: ignore[misc]  # deliberately: isinstance() sees the target's class
    def __class__(self) -> type[Any]:
        return type(object.__getattribute__(self, "_target"))

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_target")
        harness: Harness = object.__getattribute__(self, "_harness")
        value = getattr(target, name)
        if inspect.ismethod(value) or inspect.isfunction(value):  # incl. the bound operations

            def blocking(*args: Any, **kwargs: Any) -> Any:
                return harness.call(value, *args, **kwargs)

            blocking.__name__ = name
            blocking.__doc__ = value.__doc__
            return blocking
        return harness.wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        harness: Harness = object.__getattribute__(self, "_harness")
        setattr(object.__getattribute__(self, "_target"), name, harness.unwrap(value))

    def __repr__(self) -> str:
        return f"<blocking {object.__getattribute__(self, '_target')!r}>"


class ThreadSafeEvent:
    """An asyncio.Event used from any thread (like a threading.Event): set on the loop."""

    def __init__(self, event: asyncio.Event, harness: Harness) -> None:
        self.event = event
        self._harness = harness

    def set(self) -> None:
        """Set the event on its loop (returns once it is set)."""
        if self._harness.loop.in_loop_thread():
            self.event.set()
        else:
            self._harness.loop.call(self.event.set)

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        async def waited() -> bool:
            try:
                await asyncio.wait_for(self.event.wait(), timeout)
            except asyncio.TimeoutError:
                return False
            return True

        return self._harness.loop.run(waited())


class Driven(type):
    """The metaclass of the asyncio API classes a test builds (see ``asyncio_api``): built
    from test code, an object is made on the test's loop (sync clients swapped for their
    twins, proxies unwrapped) and handed back as a ``Blocking`` proxy; built on the loop
    (by the library: the manager's ``register``, its workers), it is made as is."""

    harness: Harness

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        harness = cls.harness
        if harness.loop.in_loop_thread():
            return super().__call__(*args, **kwargs)
        return harness.call(super().__call__, *args, **kwargs)


@dataclass(frozen=True)
class Api:
    """The API a behaviour test drives, typed as the sync one (which the asyncio view mimics):
    ``name`` is "sync" or "asyncio"; ``driver_for(client)`` is a blocking driver of that kind
    on ``client`` (for the tests that run the core's calls directly)."""

    name: str
    BaseQueue: type[pyqcore.BaseQueue]
    QueueManager: type[pyqcore.QueueManager]
    Worker: type[pyqcore.Worker]
    driver_for: Callable[[Client], SyncDriver]


def sync_api() -> Api:
    """The sync API itself."""
    return Api("sync", pyqcore.BaseQueue, pyqcore.QueueManager, pyqcore.Worker, SyncDriver)


def asyncio_api(harness: Harness) -> Api:
    """The asyncio API as a sync test sees it: ``BaseQueue``, ``QueueManager`` and ``Worker``
    are subclasses of ``pyqcore.asyncio``'s built through ``Driven`` on ``harness``. A test may
    subclass ``BaseQueue`` (a plain ``def process_job`` then runs in a thread)."""

    def driven(base: type[Any]) -> Any:
        return Driven(base.__name__, (base,), {"harness": harness, "__module__": __name__})

    def driver_for(client: Client) -> Any:
        return harness.wrap(harness.loop.call(AsyncDriver, harness.twin(client)))

    return Api("asyncio", driven(pyqcore.asyncio.BaseQueue), driven(pyqcore.asyncio.QueueManager),
               driven(pyqcore.asyncio.Worker), driver_for)


def in_thread(function: Callable[..., T], *args: Any,
              **kwargs: Any) -> concurrent.futures.Future[T]:
    """Call ``function`` in a new daemon thread; its result (or exception) comes through the
    future (``future.result(timeout)``)."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name=f"test-{getattr(function, '__name__', 'call')}",
                     daemon=True).start()
    return future


def stop_waiting_worker(worker: Any, run: concurrent.futures.Future[T], client: Any,
                        queue: Any, timeout: float = 40.0) -> T:
    """Stop a worker that may be blocked on its queue's wake list (a long idle_wait: it would
    see its stop flag only after that wait, so a marker wakes it); its report."""
    worker.stop.set()
    client.rpush(queue.keys.key("wake"), "stop")
    return run.result(timeout)


def at_once(obj: Any, method: str, calls: list[tuple[tuple[Any, ...], dict[str, Any]]]
            ) -> list[Any]:
    """``getattr(obj, method)(*args, **kwargs)`` for every (args, kwargs) of ``calls``, all
    concurrently; their results in order, an exception in place of a result. On the asyncio
    API (``obj`` a ``Blocking`` proxy) they are the tasks of one ``asyncio.gather`` on the
    test's loop, as an application's concurrent requests are: every task starts before any
    reply arrives. On the sync API each runs in a thread of its own, all started together."""
    if isinstance(obj, Blocking):
        target = object.__getattribute__(obj, "_target")
        harness: Harness = object.__getattribute__(obj, "_harness")
        bound = getattr(target, method)

        async def gathered() -> list[Any]:
            return await asyncio.gather(*(bound(*args, **kwargs) for args, kwargs in calls),
                                        return_exceptions=True)

        return harness.loop.run(gathered())
    bound = getattr(obj, method)
    start = threading.Barrier(len(calls))

    def one(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        start.wait(CALL_TIMEOUT)
        try:
            return bound(*args, **kwargs)
        except Exception as exc:  # handed back in place of the result
            return exc

    futures = [in_thread(one, args, kwargs) for args, kwargs in calls]
    return [future.result(CALL_TIMEOUT) for future in futures]
