"""pyqcore: a Redis job queue whose every state transition is one atomic Lua script."""

import logging

from pyqcore.backoff import Backoff
from pyqcore.codes import Code, Outcome
from pyqcore.dead_letter import DeadLetterQueue, DeadLetterReport
from pyqcore.errors import (
    ConfigurationError,
    DeserializationError,
    LeaseLostError,
    NonRetryableError,
    PyqcoreError,
    SerializationError,
)
from pyqcore.health import EvictionPolicyWarning
from pyqcore.job import DeadLetterItem, ErrorInfo, Job
from pyqcore.manager import QueueManager
from pyqcore.queue import BaseQueue
from pyqcore.worker import WorkerReport

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
    "EvictionPolicyWarning",
    "Job",
    "LeaseLostError",
    "NonRetryableError",
    "Outcome",
    "PyqcoreError",
    "QueueManager",
    "SerializationError",
    "WorkerReport",
]
__version__ = "0.1.0"

# A library logs, the application decides where it goes (nothing is printed unless configured).
logging.getLogger("pyqcore").addHandler(logging.NullHandler())
