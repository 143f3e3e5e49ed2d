"""The queues of one prefix, without I/O: the ones this process registered, and the flows that
find every queue any process announced (``QueueCore.announce``) and the partitions of a queue
known only by name."""

from __future__ import annotations

from pyqcore.core.calls import QueueCalls, text
from pyqcore.core.effects import Command, Flow
from pyqcore.core.partitions import Partitions
from pyqcore.core.queue import QueueCore
from pyqcore.errors import ConfigurationError, UnknownQueueError
from pyqcore.keys import event_queues_key, partitions_key, registry_key, validate_name
from pyqcore.settings import QueueSettings, check_clock
from pyqcore.testing import ManualClock


class Registry:
    """Queue cores by name under one prefix, and the flows that read what Redis records."""

    def __init__(self, prefix: str, clock: ManualClock | None = None) -> None:
        self.prefix = validate_name("prefix", prefix)
        self.clock = check_clock(clock)  # None: the server's (a ManualClock in tests)
        self.queues: dict[str, QueueCore] = {}

    def add(self, core: QueueCore) -> None:
        """Register a queue's core; a name is registered once."""
        if core.name in self.queues:
            raise ConfigurationError(f"a queue named {core.name!r} is already registered")
        self.queues[core.name] = core

    def unknown(self, name: str) -> UnknownQueueError:
        """The error for a name that was never registered here, listing the known ones."""
        known = ", ".join(sorted(self.queues)) or "none"
        return UnknownQueueError(f"no queue named {name!r} is registered (known: {known})")

    def known_queue_names(self) -> Flow[list[str]]:
        """Registered queues plus every queue any process announced under this prefix."""
        members = yield Command(("SMEMBERS", registry_key(self.prefix)),
                                lambda raw: {text(m) for m in raw})
        return sorted(members | set(self.queues))

    def names(self, queue: str | None) -> Flow[list[str]]:
        """``[queue]``, or every known queue for None."""
        if queue is not None:
            return [validate_name("queue name", queue)]
        return (yield from self.known_queue_names())

    def parts_of(self, queue: str) -> Flow[list[QueueCalls]]:
        """The script calls of each partition of a queue: the registered queue's, or for a
        name only, defaults with the partition count and the events setting recorded when it
        was announced (so a redrive or a purge writes its events)."""
        registered = self.queues.get(queue)
        if registered is not None:
            return registered.partitions.parts
        count, maxlen = yield [Command(("HGET", partitions_key(self.prefix), queue),
                                       lambda raw: int(raw or 1)),
                               Command(("HGET", event_queues_key(self.prefix), queue),
                                       lambda raw: int(raw or 0))]
        settings = QueueSettings(name=queue, prefix=self.prefix, clock=self.clock,
                                 partitions=count, events=maxlen > 0,
                                 events_maxlen=maxlen or 10_000)
        return Partitions(settings).parts
