"""``DeadLetterApi``: the dead-letter queue's public surface, declared once for the sync and
asyncio drivers (see ``operation``); the flows are ``pyqcore.core.dead_letters``."""

from __future__ import annotations

from typing import Any

from pyqcore.api.operation import operation
from pyqcore.core.dead_letters import DeadLetters


class DeadLetterApi:
    """The jobs that failed for good, across every queue of a manager's prefix: list them,
    purge old ones, redrive young ones to their queue. Get it as
    ``manager.dead_letter_queue``."""

    def __init__(self, driver: Any, core: DeadLetters) -> None:
        self.driver = driver
        self.core = core

    @property
    def max_redrives(self) -> int:
        """How often ``process_dead_letter_queue`` redrives one job before leaving it dead."""
        return self.core.max_redrives

    @max_redrives.setter
    def max_redrives(self, value: int) -> None:
        self.core.max_redrives = value

    items = operation(DeadLetters.items)
    get = operation(DeadLetters.get)
    count = operation(DeadLetters.count)
    process_dead_letter_queue = operation(DeadLetters.process_dead_letter_queue)
    reprocess_item = operation(DeadLetters.reprocess_item)
    requeue = operation(DeadLetters.requeue)
    purge = operation(DeadLetters.purge)
