"""The public API declared once (``operation``): the queue, the manager and the dead-letter
queue, each a class that the sync package and ``pyqcore.asyncio`` complete with a driver."""
