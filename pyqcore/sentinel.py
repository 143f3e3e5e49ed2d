"""Redis Sentinel URLs, for the CLI's ``--url`` and for applications that configure Redis by
URL: ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?options]``.

The hosts are the sentinels (port 26379 when left out); ``service`` is the name they monitor
the primary under; user and password are the primary's. Options: ``sentinel_username`` and
``sentinel_password`` (when the sentinels themselves require them), ``min_other_sentinels``
(ignore a sentinel that sees fewer peers), and the primary's connection options as redis-py
reads them from a ``redis://`` URL (``socket_timeout``, ``socket_connect_timeout``, ...; the
``socket_*`` ones also apply to the sentinels). The client is redis-py's own
``Sentinel(...).master_for(service)``: it asks the sentinels for the primary on every new
connection, so it follows a failover by itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from pyqcore.errors import ConfigurationError

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
# how redis-py types each option of a redis:// URL (its table, typed loosely there)
PARSERS: dict[str, Callable[[str], Any]] = URL_QUERY_ARGUMENT_PARSERS  # type: ignore[assignment]


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL (see the module docstring)."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # the primary's connection options
    sentinel_options: dict[str, Any] = field(default_factory=dict)  # the sentinels' ones
    min_other_sentinels: int = 0


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is a ``redis+sentinel://`` URL."""
    return url.lower().startswith(f"{SCHEME}://")


def parse_sentinel_url(url: str) -> SentinelUrl:
    """``url`` parsed; ConfigurationError (a ValueError) saying what is wrong with it."""
    if not is_sentinel_url(url):
        raise ConfigurationError(f"a Sentinel URL starts with {SCHEME}://")
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigurationError("a Sentinel URL names at least one sentinel: "
                                 f"{SCHEME}://host:port[,host:port...]/service[/db]")
    path = [unquote(p) for p in parts.path.split("/")[1:] if p]
    if not path or len(path) > 2:
        raise ConfigurationError("the path of a Sentinel URL is /service or /service/db, got "
                                 f"{parts.path!r}")
    options = _query_options(parts.query)
    # the sentinels' own credentials, and the primary's socket options (as redis-py does)
    sentinel_options = {name.removeprefix("sentinel_"): options.pop(name)
                        for name in SENTINEL_OPTIONS if name in options}
    sentinel_options.update({k: v for k, v in options.items() if k.startswith("socket_")})
    min_other = options.pop("min_other_sentinels", "0")
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if has_password:
            options["password"] = unquote(password)
    return SentinelUrl(
        sentinels=[_address(host) for host in hosts.split(",")], service=path[0],
        db=_integer("db", path[1]) if len(path) > 1 else 0, options=options,
        sentinel_options=sentinel_options,
        min_other_sentinels=_integer("min_other_sentinels", min_other))


def sentinel_client(url: str, **defaults: Any) -> redis.Redis:
    """A client of the primary that the sentinels of ``url`` name (redis-py's
    ``master_for``). ``defaults`` are connection options the URL's own options override."""
    parsed = parse_sentinel_url(url)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, min_other_sentinels=parsed.min_other_sentinels,
        sentinel_kwargs=_sentinel_kwargs(parsed, defaults), **{**defaults, **parsed.options})
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service, db=parsed.db)
    return client


def async_sentinel_client(url: str, **defaults: Any) -> redis.asyncio.Redis:
    """``sentinel_client`` for ``redis.asyncio`` (``pyqcore.asyncio.QueueManager``)."""
    parsed = parse_sentinel_url(url)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, min_other_sentinels=parsed.min_other_sentinels,
        sentinel_kwargs=_sentinel_kwargs(parsed, defaults), **{**defaults, **parsed.options})
    client: redis.asyncio.Redis = sentinel.master_for(parsed.service, db=parsed.db)
    return client


def _sentinel_kwargs(parsed: SentinelUrl, defaults: dict[str, Any]) -> dict[str, Any]:
    """The sentinels' connection options: the ``socket_*`` defaults, then the URL's."""
    sockets = {k: v for k, v in defaults.items() if k.startswith("socket_")}
    return {**sockets, **parsed.sentinel_options}


def _query_options(query: str) -> dict[str, Any]:
    """The URL's options, typed as redis-py types them in a ``redis://`` URL."""
    known = {*URL_QUERY_ARGUMENT_PARSERS, *SENTINEL_OPTIONS, "min_other_sentinels",
             "client_name"} - {"db"}
    options: dict[str, Any] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in known:
            raise ConfigurationError(f"unknown option {name!r} in a Sentinel URL (known: "
                                     f"{', '.join(sorted(known))})")
        parser = PARSERS.get(name)
        try:
            options[name] = parser(values[-1]) if parser else values[-1]
        except (TypeError, ValueError):
            raise ConfigurationError(f"invalid value {values[-1]!r} for {name!r} in a Sentinel "
                                     "URL") from None
    return options


def _address(host: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as (host, port)."""
    try:
        parts = urlsplit(f"//{host}")
        hostname, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number from 0 to 65535
        hostname = None
    if not hostname:
        raise ConfigurationError(f"{host!r} is not a sentinel's host:port")
    return hostname, port or DEFAULT_PORT


def _integer(name: str, value: str) -> int:
    """``value`` as an int >= 0, or ConfigurationError naming it."""
    if not value.isdigit():
        raise ConfigurationError(f"{name} must be an int >= 0 in a Sentinel URL, got {value!r}")
    return int(value)
