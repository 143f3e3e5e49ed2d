"""``DeadLetterQueue``: the dead-letter queue on the blocking driver (declared in
``pyqcore.api.dead_letter``)."""

from __future__ import annotations

from pyqcore.api.dead_letter import DeadLetterApi
from pyqcore.api.operation import Blocking


class DeadLetterQueue(DeadLetterApi, Blocking):
    """The jobs that failed for good: ``items``, ``count``, ``process_dead_letter_queue``,
    ``reprocess_item``, ``requeue``, ``purge``. Get it as ``manager.dead_letter_queue``."""
