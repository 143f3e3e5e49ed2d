"""Start-up checks of the Redis server that cannot fail a call but can lose jobs silently."""

from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import RedisError

log = logging.getLogger("pyqcore")
_checked: weakref.WeakSet[Any] = weakref.WeakSet()


class EvictionPolicyWarning(UserWarning):
    """Redis may evict keys under memory pressure, which would silently drop jobs."""


def warn_if_evicting(client: Any) -> None:
    """Warn once per client when ``maxmemory-policy`` is not ``noeviction``: on a cluster, when
    any primary's is not (each primary evicts on its own, and a queue may live on any)."""
    if client in _checked:
        return
    _checked.add(client)
    try:
        if isinstance(client, RedisCluster):
            reply = client.config_get("maxmemory-policy", target_nodes=RedisCluster.PRIMARIES)
        else:
            reply = client.config_get("maxmemory-policy")
    except (RedisError, AttributeError):  # CONFIG may be denied to an ACL user; not fatal
        return
    evicting = sorted({p for p in _policies(reply) if p != "noeviction"})
    if evicting:
        shown = " / ".join(repr(p) for p in evicting)
        message = (f"Redis maxmemory-policy is {shown}, not 'noeviction': under memory "
                   "pressure Redis may evict queue keys and silently lose jobs")
        log.warning(message)
        warnings.warn(message, EvictionPolicyWarning, stacklevel=3)


def _policies(reply: Any) -> list[str]:
    """Every policy in a CONFIG GET reply: {name: value}, bytes or str, or {node: {name: value}}
    from a cluster client asking several nodes."""
    found: list[str] = []
    for name, value in dict(reply).items():
        if isinstance(value, dict):
            found.extend(_policies(value))
        elif name in (b"maxmemory-policy", "maxmemory-policy"):
            found.append(value.decode() if isinstance(value, bytes) else str(value))
    return found
