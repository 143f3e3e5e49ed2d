"""Start-up checks of the Redis server that cannot fail a call but can lose jobs silently."""

from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any

from redis.exceptions import RedisError

log = logging.getLogger("pyqcore")
_checked: weakref.WeakSet[Any] = weakref.WeakSet()


class EvictionPolicyWarning(UserWarning):
    """Redis may evict keys under memory pressure, which would silently drop jobs."""


def warn_if_evicting(client: Any) -> None:
    """Warn once per client when ``maxmemory-policy`` is not ``noeviction``."""
    if client in _checked:
        return
    _checked.add(client)
    try:
        reply = client.config_get("maxmemory-policy")
    except (RedisError, AttributeError):  # CONFIG may be denied to an ACL user; not fatal
        return
    policy = _policy(reply)
    if policy is not None and policy != "noeviction":
        message = (f"Redis maxmemory-policy is {policy!r}, not 'noeviction': under memory "
                   "pressure Redis may evict queue keys and silently lose jobs")
        log.warning(message)
        warnings.warn(message, EvictionPolicyWarning, stacklevel=3)


def _policy(reply: Any) -> str | None:
    """The policy from a CONFIG GET reply: {name: value}, bytes or str, or per cluster node."""
    for name, value in dict(reply).items():
        if isinstance(value, dict):
            return _policy(value)
        if name in (b"maxmemory-policy", "maxmemory-policy"):
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
