"""``DeadLetterQueue`` on the asyncio driver: the methods of ``pyqcore.DeadLetterQueue``,
awaited (both are declared once in ``pyqcore.api.dead_letter``)."""

from __future__ import annotations

from pyqcore.api.dead_letter import DeadLetterApi
from pyqcore.api.operation import Awaiting


class DeadLetterQueue(DeadLetterApi, Awaiting):
    """The jobs that failed for good, awaited; get it as ``manager.dead_letter_queue``."""
