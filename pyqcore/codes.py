"""Reply codes of the Lua scripts (lua/includes/codes.lua) and the outcomes of a failure."""

from __future__ import annotations

from enum import Enum, IntEnum


class Code(IntEnum):
    """First element of every script reply; a test keeps these equal to the Lua constants."""

    OK = 0
    BAD_ARGUMENT = 1  # ARGV failed validation; the script wrote nothing
    LEASE_LOST = 2  # the token given is not the job's current lease
    LOCKED = 3  # an item lock is held under another token
    QUEUE_FULL = 4  # an add would take the queue past its max_ready; the script wrote nothing


class Throttle(IntEnum):
    """What held a reserve back (its reply's fifth element; a test keeps these equal to the Lua
    constants in lua/reserve.lua)."""

    NONE = 0  # nothing: the count was reached, or nothing is ready
    RATE = 1  # rate_limit: nothing starts before the reply's wait, whatever is added
    FULL = 2  # max_active leases are held: the next lease to end wakes a worker
    GROUPS = 3  # the ready jobs wait for their groups' limits
    PAUSED = 4  # the queue is paused


class Outcome(str, Enum):
    """What ``fail`` did with a job: scheduled it again, moved it to the dead-letter queue, or
    deleted it (it was cancelled while leased: ``queue.cancel``)."""

    RETRY = "retry"
    DEAD = "dead"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value
