"""The web dashboard, ``pyqcore web`` (the ``pyqcore[web]`` extra: Starlette and uvicorn):
queues with their counts, counters and completed rate; the running workers; the dead-letter
queue with search, requeue and purge; a dead job's page. ``create_app(manager)`` builds the
ASGI app (``pyqcore.web.app``); ``pyqcore.web.pages`` renders the HTML, escaping every value;
``pyqcore.web.dashboard`` reads and writes through the sync public API."""

from pyqcore.web.app import create_app

__all__ = ["create_app"]
