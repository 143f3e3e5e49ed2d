"""The blocking driver and the sync API on it: ``BaseQueue``, ``QueueManager``,
``DeadLetterQueue`` and the threaded ``Worker`` (all exported by ``pyqcore``)."""
