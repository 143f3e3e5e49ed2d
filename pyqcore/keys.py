"""Redis key names. Every key of queue Q carries the hash tag {Q}, so a queue lives in one slot."""

from __future__ import annotations

from dataclasses import dataclass

from pyqcore.errors import ConfigurationError

DEFAULT_PREFIX = "pyqcore"
MAX_NAME_LENGTH = 200


def validate_name(what: str, value: object) -> str:
    """Return ``value`` if it can be part of a key: a non-empty str without braces or spaces."""
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{what} must be a non-empty str, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if any(c in value for c in "{}#") or not value.isprintable() or " " in value:
        raise ConfigurationError(
            f"{what} {value!r} may not contain braces (they delimit the hash tag), '#' (it "
            "numbers partitions), spaces or control characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """All key names of one queue, ``<prefix>:{<queue>}:<part>``, or of one partition of a
    partitioned queue, ``<prefix>:{<queue>#<i>}:<part>``: each partition is its own slot."""

    prefix: str
    queue: str
    partition: int | None = None

    def __post_init__(self) -> None:
        validate_name("prefix", self.prefix)
        validate_name("queue name", self.queue)

    @property
    def tag(self) -> str:
        """The hash tag: the queue name, or ``<queue>#<partition>``."""
        return self.queue if self.partition is None else f"{self.queue}#{self.partition}"

    def key(self, part: str) -> str:
        """The key of one part of the queue, e.g. ``key("ready")`` → ``pyqcore:{emails}:ready``."""
        return f"{self.prefix}:{{{self.tag}}}:{part}"

    def lock(self, item: str) -> str:
        """The key of an item lock taken with ``queue.lock(item)``."""
        return self.key(f"lock:{item}")

    def keys(self, parts: tuple[str, ...]) -> list[str]:
        """The keys of several parts, in order (a script's KEYS)."""
        return [self.key(p) for p in parts]


def registry_key(prefix: str) -> str:
    """The SET of known queue names under a prefix (for discovery; not part of any queue)."""
    return f"{prefix}:queues"


def partitions_key(prefix: str) -> str:
    """The HASH of queue name -> partition count, for partitioned queues (absent: 1)."""
    return f"{prefix}:partitions"


def schedules_key(prefix: str) -> str:
    """The HASH of schedule name -> its queue, every schedule under a prefix (each is stored
    with its queue: ``pyqcore.core.schedules``)."""
    return f"{prefix}:schedules"


def event_queues_key(prefix: str) -> str:
    """The HASH of queue name -> events_maxlen, for the queues made with ``events=True`` (as
    their last announcement said): the DLQ's redrive and purge and ``pyqcore events`` read it
    for a queue they know by name only."""
    return f"{prefix}:event_queues"
