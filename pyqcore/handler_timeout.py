"""Running a handler's coroutine within its timeout, for both drivers (the sync worker runs an
``async def`` handler on an event loop of its slot, the asyncio worker on its own loop): past
the timeout the coroutine is cancelled, and the run fails with ``JobTimeoutError``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from pyqcore.core.slot import timeout_error


async def within(awaitable: Awaitable[Any], timeout: float) -> Any:
    """What ``awaitable`` returns (or raises), unless it is still running after ``timeout``
    seconds: then it is cancelled and JobTimeoutError is raised. (Not ``asyncio.wait_for``:
    it would take a TimeoutError the handler raises itself for the timeout.)"""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise timeout_error(timeout)
