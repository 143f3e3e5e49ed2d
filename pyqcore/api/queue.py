"""``QueueApi``: a queue's public surface, declared once. The sync ``pyqcore.BaseQueue`` and the
asyncio ``pyqcore.asyncio.BaseQueue`` are this class plus a driver (see ``operation``): they
read settings the same way, build the same flows, and differ only in how effects are performed
and how a handler is called.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from pyqcore.api.operation import operation
from pyqcore.backoff import Backoff
from pyqcore.core.queue import QueueCore
from pyqcore.errors import ConfigurationError
from pyqcore.health import first_use
from pyqcore.job import Job
from pyqcore.keys import DEFAULT_PREFIX, QueueKeys
from pyqcore.limits import RateLimit
from pyqcore.serializer import MSGPACK, Serializer
from pyqcore.settings import QueueSettings
from pyqcore.testing import ManualClock

if TYPE_CHECKING:
    from typing_extensions import Unpack


F = TypeVar("F", bound=Callable[..., Any])


def default_handler(method: F) -> F:
    """Marks a driver's own ``process_job`` / ``process_jobs`` (which call ``handler=`` /
    ``batch_handler=``), so a queue knows when a subclass has overridden them."""
    method.is_default_handler = True  # type: ignore[attr-defined]
    return method


def _is_default(method: Any) -> bool:
    return getattr(method, "is_default_handler", False) is True



class QueueOptions(TypedDict, total=False):
    """The settings a queue's constructor takes; None (or absent) keeps the class default."""

    name: str | None
    max_retries: int | None
    visibility_timeout: float | None
    backoff: Backoff | None
    serializer: Serializer | None
    max_payload_bytes: int | None
    batch_size: int | None
    partitions: int | None
    max_ready: int | None
    prefix: str
    clock: ManualClock | None  # tests only: the queue's clock is the Redis server's
    rng: random.Random | None
    tracing: bool | None
    timeout: float | None
    retry_on: type[BaseException] | Iterable[type[BaseException]] | None
    dead_on: type[BaseException] | Iterable[type[BaseException]] | None
    keep_completed: float | None
    keep_completed_count: int | None
    store_results: bool | None
    events: bool | None
    events_maxlen: int | None
    rate_limit: tuple[int, float] | None
    max_active: int | None
    group_concurrency: int | None
    group_rate_limit: tuple[int, float] | None


# The options whose default is a class attribute of the queue (prefix, clock and rng are not;
# events shares its name with the events() method: see events_setting).
_CLASS_DEFAULTS = tuple(key for key in QueueOptions.__annotations__
                        if key not in ("prefix", "clock", "rng", "events"))


def _as_option(value: Any) -> Any:
    """A checked setting as the option is written: a RateLimit as its (starts, seconds)."""
    return (value.starts, value.seconds) if isinstance(value, RateLimit) else value


class QueueApi:
    """A named queue. Class attributes are the defaults; constructor options override them."""

    name: str = ""
    max_retries: int = 3  # retries after the first delivery: at most max_retries + 1 deliveries
    visibility_timeout: float = 30.0  # seconds a delivery is leased before it is reclaimed
    backoff: Backoff = Backoff.exponential()
    serializer: Serializer = MSGPACK
    max_payload_bytes: int = 512 * 1024  # largest encoded job record accepted by add
    batch_size: int = 1000  # most jobs per enqueue script call
    partitions: int = 1  # hash tags (so cluster slots) the queue is spread over
    tracing: bool = False  # OpenTelemetry (pyqcore[otel]): trace context in jobs, run spans
    timeout: float | None = None  # seconds a handler run may take (None: no limit)
    # Retry rules: a failure with an exception of dead_on (or, when retry_on is set, of none of
    # retry_on) goes to the dead-letter queue at once, attempts left or not.
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None
    dead_on: type[BaseException] | tuple[type[BaseException], ...] = ()
    # Completed and cancelled jobs kept for get_job (and completed ones' results with
    # store_results), trimmed by age and count; off by default (0, 0): an ack or a cancel then
    # deletes the job, as before.
    keep_completed: float = 0.0  # seconds
    keep_completed_count: int = 0
    store_results: bool = False  # the handler's return value, kept with the completed job
    # Events (the option events=True, or "events = True" on a subclass): a bounded stream per
    # partition, one entry per transition, read by queue.events(); store_results alone writes
    # the terminal ones, which queue.result() waits for.
    events_maxlen: int = 10_000  # entries kept per partition, about (XADD MAXLEN ~)
    max_ready: int | None = None  # adds refused (QueueFullError) past this many jobs waiting
    # Flow control, decided inside reserve for the whole fleet (README "Flow control"):
    rate_limit: tuple[int, float] | None = None  # (n, s): at most n starts in any s seconds
    max_active: int | None = None  # at most this many jobs leased at once
    group_concurrency: int | None = None  # at most this many leased at once per group
    group_rate_limit: tuple[int, float] | None = None  # (n, s) per group

    core: QueueCore

    def __init__(
        self, driver: Any, *, handler: Callable[..., Any] | None,
        batch_handler: Callable[..., Any] | None, **options: Unpack[QueueOptions],
    ) -> None:
        self.driver = driver
        self.client = driver.client
        unknown = sorted(set(options) - set(QueueOptions.__annotations__))
        if unknown:
            raise ConfigurationError(f"unknown queue option(s) {', '.join(unknown)}; the "
                                     f"options are {', '.join(QueueOptions.__annotations__)}")
        if handler is not None and batch_handler is not None:
            raise ConfigurationError("pass handler= or batch_handler=, not both")
        for function in (handler, batch_handler):
            if function is not None and not callable(function):
                raise ConfigurationError(f"a handler must be callable, got {function!r}")
        self.handler = handler
        self.batch_handler = batch_handler

        given: dict[str, Any] = {
            key: getattr(self, key) if options.get(key) is None else options.get(key)
            for key in _CLASS_DEFAULTS}
        s = QueueSettings(**given, events=events_setting(self, options.get("events")),
                          prefix=options.get("prefix", DEFAULT_PREFIX),
                          clock=options.get("clock"), rng=options.get("rng") or random.Random())
        self.settings = s
        for key in _CLASS_DEFAULTS:  # the attributes show the checked settings
            setattr(self, key, _as_option(getattr(s, key)))
        self.keys = QueueKeys(s.prefix, s.name)  # a partitioned queue's own keys (item locks)
        self.core = QueueCore(s, cluster=driver.cluster, new_waiter=driver.new_waiter)
        self.core.check_eviction = first_use(driver.client)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    @property
    def handles_batches(self) -> bool:
        """Whether the worker hands this queue whole batches (``process_jobs``)."""
        return self.batch_handler is not None or not _is_default(type(self).process_jobs)

    @property
    def has_handler(self) -> bool:
        """Whether the queue can process jobs: a handler given, or a handler method
        overridden."""
        return (self.handler is not None or self.batch_handler is not None
                or not _is_default(type(self).process_job) or self.handles_batches)

    def handler_is_coroutine(self, batches: bool = False) -> bool:
        """Whether the job (or batch) handler is an ``async def``, which a timeout cancels:
        the overriding method, else the ``handler=`` (``batch_handler=``) given."""
        method = type(self).process_jobs if batches else type(self).process_job
        if _is_default(method):
            return is_coroutine_function(self.batch_handler if batches else self.handler)
        return is_coroutine_function(method)

    def missing_handler(self, batches: bool = False) -> ConfigurationError:
        """The error of a queue asked to process jobs without a handler."""
        if batches:
            return ConfigurationError(f"queue {self.name!r} has no batch handler")
        return ConfigurationError(f"queue {self.name!r} has no handler: override process_job "
                                  "or register it with handler=")

    def given_handler(self, batches: bool = False) -> Callable[..., Any]:
        """The ``handler=`` (or ``batch_handler=``) the queue was made with, which the default
        ``process_job`` (``process_jobs``) calls; ConfigurationError if there is none."""
        handler = self.batch_handler if batches else self.handler
        if handler is None:
            raise self.missing_handler(batches)
        return handler

    @default_handler
    def process_job(self, job: Job) -> Any:
        """Handle one job (each driver's ``BaseQueue`` defines it)."""
        raise NotImplementedError

    @default_handler
    def process_jobs(self, jobs: list[Job]) -> Any:
        """Handle a leased batch (each driver's ``BaseQueue`` defines it)."""
        raise NotImplementedError

    add = operation(QueueCore.add)
    add_batch = operation(QueueCore.add_batch)
    reserve = operation(QueueCore.reserve)
    ack = operation(QueueCore.ack)
    fail = operation(QueueCore.fail)
    extend = operation(QueueCore.extend)
    release = operation(QueueCore.release)
    counts = operation(QueueCore.counts)
    get_job = operation(QueueCore.get_job)
    result = operation(QueueCore.result)
    cancel = operation(QueueCore.cancel)
    cancel_many = operation(QueueCore.cancel_many)
    clear = operation(QueueCore.clear)
    group_counts = operation(QueueCore.group_counts)
    pause = operation(QueueCore.pause)
    resume = operation(QueueCore.resume)
    is_paused = operation(QueueCore.is_paused)
    pause_group = operation(QueueCore.pause_group)
    resume_group = operation(QueueCore.resume_group)
    stats = operation(QueueCore.stats)


def events_setting(queue: QueueApi, option: bool | None) -> Any:
    """The queue's ``events`` setting: the option given, else a subclass's ``events = True``
    (which hides the ``events()`` method under that name: the method is put back on the
    instance), else False."""
    declared = getattr(type(queue), "events", None)
    if callable(declared):  # the method itself: no class attribute declared
        return False if option is None else option
    for klass in type(queue).__mro__:
        method = vars(klass).get("events")
        if callable(method):
            queue.__dict__["events"] = method.__get__(queue, type(queue))
            break
    return declared if option is None else option


def is_coroutine_function(function: Any) -> bool:
    """Whether calling ``function`` returns a coroutine: an ``async def``, or an object whose
    ``__call__`` is one."""
    return inspect.iscoroutinefunction(function) or (
        callable(function) and inspect.iscoroutinefunction(function.__call__))
