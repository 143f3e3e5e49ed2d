"""pyqcore: a Redis job queue whose every state transition is one atomic Lua script."""

import logging

from pyqcore.backoff import Backoff
from pyqcore.codes import Code, Outcome
from pyqcore.core.dead_letters import DeadLetterReport
from pyqcore.core.slot import WorkerReport
from pyqcore.errors import (
    ConfigurationError,
    DeserializationError,
    JobCancelledError,
    JobDeadError,
    JobNotFoundError,
    LeaseLostError,
    NonRetryableError,
    PyqcoreError,
    QueueFullError,
    RedisAuthenticationError,
    RedisUnavailableError,
    ResultTimeoutError,
    SerializationError,
)
from pyqcore.events import Event
from pyqcore.health import EvictionPolicyWarning
from pyqcore.job import DeadLetterItem, ErrorInfo, Job, JobInfo, JobState
from pyqcore.limits import GroupCounts
from pyqcore.schedule import Schedule
from pyqcore.sync.dead_letter import DeadLetterQueue
from pyqcore.sync.manager import QueueManager
from pyqcore.sync.queue import BaseQueue
from pyqcore.sync.worker import Worker

__all__ = [
    "Backoff",
    "BaseQueue",
    "Code",
    "ConfigurationError",
    "DeadLetterItem",
    "DeadLetterQueue",
    "DeadLetterReport",
    "DeserializationError",
    "ErrorInfo",
    "Event",
    "EvictionPolicyWarning",
    "GroupCounts",
    "Job",
    "JobCancelledError",
    "JobDeadError",
    "JobInfo",
    "JobNotFoundError",
    "JobState",
    "LeaseLostError",
    "NonRetryableError",
    "Outcome",
    "PyqcoreError",
    "QueueFullError",
    "QueueManager",
    "RedisAuthenticationError",
    "RedisUnavailableError",
    "ResultTimeoutError",
    "Schedule",
    "SerializationError",
    "Worker",
    "WorkerReport",
]
__version__ = "0.1.0"

# A library logs, the application decides where it goes (nothing is printed unless configured).
logging.getLogger("pyqcore").addHandler(logging.NullHandler())
