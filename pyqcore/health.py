"""A start-up check of the Redis server that cannot fail a call but can lose jobs silently:
an eviction policy other than ``noeviction``. It is a flow (``pyqcore.core.effects``), so both
drivers run it, once per client, with a queue's first call."""

from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any

from redis.exceptions import RedisError

from pyqcore.core.effects import Command, Flow

log = logging.getLogger("pyqcore")
_checked: weakref.WeakSet[Any] = weakref.WeakSet()


class EvictionPolicyWarning(UserWarning):
    """Redis may evict keys under memory pressure, which would silently drop jobs."""


def first_use(client: Any) -> bool:
    """True the first time a client is asked about (so the check runs once per client)."""
    if client in _checked:
        return False
    _checked.add(client)
    return True


def warn_if_evicting(cluster: bool) -> Flow[None]:
    """Warn when ``maxmemory-policy`` is not ``noeviction``: on a cluster, when any primary's
    is not (each primary evicts on its own, and a queue may live on any). A server that denies
    CONFIG (an ACL user without it) is not checked."""
    options = {"target_nodes": "primaries"} if cluster else {}
    try:
        reply = yield Command(("CONFIG", "GET", "maxmemory-policy"), options=options)
    except RedisError:  # CONFIG may be denied to an ACL user; not fatal
        return
    evicting = sorted({p for p in _policies(reply) if p != "noeviction"})
    if evicting:
        shown = " / ".join(repr(p) for p in evicting)
        message = (f"Redis maxmemory-policy is {shown}, not 'noeviction': under memory "
                   "pressure Redis may evict queue keys and silently lose jobs")
        log.warning(message)
        warnings.warn(message, EvictionPolicyWarning, stacklevel=2)


def _policies(reply: Any) -> list[str]:
    """Every policy in a CONFIG GET reply: a flat [name, value] list or {name: value}, bytes or
    str, or {node: reply} from a cluster client asking several nodes."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=True))
    found: list[str] = []
    for name, value in dict(reply).items():
        if isinstance(value, dict | list):
            found.extend(_policies(value))
        elif name in (b"maxmemory-policy", "maxmemory-policy"):
            found.append(value.decode() if isinstance(value, bytes) else str(value))
    return found
