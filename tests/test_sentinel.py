"""``redis+sentinel://`` URLs (``pyqcore.sentinel``): parsing, clients of the primary they
name (sync and asyncio), passwords for the primary and for the sentinels, and the CLI's
``--url`` with one, whose mistakes are one-line errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pyqcore import ConfigurationError, QueueManager
from pyqcore.asyncio import QueueManager as AsyncManager
from pyqcore.cli import cli, safe_url
from pyqcore.sentinel import (
    SentinelUrl,
    async_sentinel_client,
    is_sentinel_url,
    parse_sentinel_url,
    sentinel_client,
)
from tests.support.sentinels import LocalSentinelGroup
from tests.test_cli import one_error_line, row, run_cli


def test_a_url_names_the_sentinels_the_service_and_the_db() -> None:
    assert parse_sentinel_url("redis+sentinel://s1:26380,s2,[::1]:5000/mymaster/3") == \
        SentinelUrl(sentinels=[("s1", 26380), ("s2", 26379), ("::1", 5000)],
                    service="mymaster", db=3)
    assert parse_sentinel_url("REDIS+SENTINEL://s1/mymaster").db == 0
    assert is_sentinel_url("redis+sentinel://s1/m") and not is_sentinel_url("redis://s1/0")


def test_passwords_go_to_the_primary_and_to_the_sentinels() -> None:
    parsed = parse_sentinel_url(
        "redis+sentinel://app:p%40ss@s1:26379/m/0?sentinel_password=sp&sentinel_username=su"
        "&socket_timeout=2.5&min_other_sentinels=1&client_name=worker")
    assert parsed.options == {"username": "app", "password": "p@ss", "socket_timeout": 2.5,
                              "client_name": "worker"}
    assert parsed.sentinel_options == {"password": "sp", "username": "su",
                                       "socket_timeout": 2.5}
    assert parsed.min_other_sentinels == 1
    assert parse_sentinel_url("redis+sentinel://:secret@s1/m").options == {"password": "secret"}


@pytest.mark.parametrize(("url", "message"), [
    ("redis://s1/0", "starts with redis+sentinel://"),
    ("redis+sentinel:///m/0", "names at least one sentinel"),
    ("redis+sentinel://s1", "path of a Sentinel URL is /service or /service/db"),
    ("redis+sentinel://s1/m/0/extra", "path of a Sentinel URL"),
    ("redis+sentinel://s1/m/zero", "db must be an int"),
    ("redis+sentinel://s1:port/m", "'s1:port' is not a sentinel's host:port"),
    ("redis+sentinel://s1,,s2/m", "'' is not a sentinel's host:port"),
    ("redis+sentinel://s1/m?socket_timeout=soon", "invalid value 'soon' for 'socket_timeout'"),
    ("redis+sentinel://s1/m?sentinel_pasword=x", "unknown option 'sentinel_pasword'"),
    ("redis+sentinel://s1/m?min_other_sentinels=-1", "min_other_sentinels must be an int"),
])
def test_a_bad_url_is_a_configuration_error_saying_what_is_wrong(url: str, message: str
                                                                 ) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("+", r"\+")):
        parse_sentinel_url(url)


def test_safe_url_hides_every_password() -> None:
    assert safe_url("redis+sentinel://u:pw@s1:1,s2:2/m/0?sentinel_password=sp&db=1") == \
        "redis+sentinel://u:***@s1:1,s2:2/m/0?sentinel_password=***&db=1"
    assert safe_url("redis://h:1/0") == "redis://h:1/0"


@pytest.fixture(scope="module")
def guarded() -> Iterator[LocalSentinelGroup]:
    """A group whose servers and sentinels each require a password of their own."""
    with LocalSentinelGroup(password="server-secret", sentinel_password="sentinel-secret"
                            ) as group:
        yield group


def test_clients_from_a_url_reach_the_primary_with_both_passwords(
    guarded: LocalSentinelGroup,
) -> None:
    client = sentinel_client(guarded.url)
    try:
        queue = QueueManager(client).register("mail")
        queue.add("hello")
        assert client.info("server")["tcp_port"] == guarded.primary().port
    finally:
        client.close()

    async def through_asyncio() -> dict[str, int]:
        async_client = async_sentinel_client(guarded.url)
        try:
            return await AsyncManager(async_client).register("mail").counts()
        finally:
            await async_client.aclose()

    assert asyncio.run(through_asyncio())["ready"] == 1
    refused = sentinel_client(guarded.url.replace("sentinel-secret", "wrong"))
    with pytest.raises(Exception, match="No master found"):
        refused.ping()
    refused.close()


def test_the_cli_takes_a_sentinel_url(guarded: LocalSentinelGroup) -> None:
    client = guarded.client()
    try:
        client.flushall()
        QueueManager(client).register("mail").add_batch(["a", "b"])
    finally:
        client.close()
    result = CliRunner().invoke(cli, ["--url", guarded.url, "stats"])
    assert result.exit_code == 0, result.output
    assert row(result.stdout, "mail")[:4] == ["1", "2", "0", "0"]  # parts, ready, delayed, leased


def test_sentinel_url_mistakes_are_one_line_errors(guarded: LocalSentinelGroup) -> None:
    hosts = guarded.url.split("@")[1].split("/")[0]
    cases = {
        ("--url", "redis+sentinel://s1:x/m", "stats"):
            "pyqcore: invalid Redis URL 'redis+sentinel://s1:x/m': 's1:x' is not a sentinel's",
        ("--url", "redis+sentinel://:secret@s1/m?socket_timeout=x", "stats"):
            "pyqcore: invalid Redis URL 'redis+sentinel://:***@s1/m?socket_timeout=x': invalid "
            "value 'x' for 'socket_timeout'",
        ("--url", guarded.url, "--cluster", "stats"):
            "pyqcore: --cluster is for a Redis Cluster node's URL",
        ("--url", f"redis+sentinel://:secret@{hosts}/pyqcore/0?sentinel_password="
         "sentinel-secret", "stats"): "pyqcore: Redis at redis+sentinel://:***@",
        ("--url", f"redis+sentinel://{hosts}/nosuch/0?sentinel_password=sentinel-secret",
         "stats"): "pyqcore: cannot connect to Redis at",
    }
    for args, expected in cases.items():
        done = run_cli(*args)
        assert done.returncode != 0, args
        assert one_error_line(done.stderr).startswith(expected), (args, done.stderr)
        assert "secret" not in done.stderr
