"""Which redis-py errors become which pyqcore error (pyqcore.core.failures), without Redis: the
real servers' side is tests/reliability/test_redis_down.py."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from pyqcore.core.failures import Outage, raise_typed, typed
from pyqcore.errors import (
    ConfigurationError,
    RedisAuthenticationError,
    RedisUnavailableError,
)


def cluster_unreachable() -> RedisClusterException:
    """What a cluster client raises when it reaches none of its nodes."""
    try:
        try:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:7000.")
        except RedisConnectionError as cause:
            raise RedisClusterException("Redis Cluster cannot be connected.") from cause
    except RedisClusterException as exc:
        return exc


@pytest.mark.parametrize("error", [
    RedisConnectionError("refused"), RedisTimeoutError("timed out"),
    MasterNotFoundError("No master found for 'mymaster'"), ClusterDownError("CLUSTERDOWN"),
    TryAgainError("TRYAGAIN"), SlotNotCoveredError("slot 7"), cluster_unreachable(),
], ids=lambda e: type(e).__name__)
def test_unreachable_redis_is_redis_unavailable(error: Exception) -> None:
    translated = typed(error)
    assert isinstance(translated, RedisUnavailableError) and str(error) in str(translated)


def test_refused_credentials_are_an_authentication_error_not_unavailable() -> None:
    translated = typed(AuthenticationError("WRONGPASS invalid username-password pair"))
    assert isinstance(translated, RedisAuthenticationError)
    assert not isinstance(translated, RedisUnavailableError)


@pytest.mark.parametrize("error", [
    ResponseError("WRONGTYPE"), NoPermissionError("NOPERM"), ReadOnlyError("READONLY"),
    RedisClusterException("no cause: a misconfigured client"), ConfigurationError("bad"),
    ValueError("not Redis"),
], ids=lambda e: type(e).__name__)
def test_other_errors_stay_as_they_are(error: Exception) -> None:
    assert typed(error) is None
    with pytest.raises(type(error)) as raised:
        raise_typed(error)
    assert raised.value is error


def test_typed_errors_keep_redis_pys_error_as_the_cause() -> None:
    refused = RedisConnectionError("refused")
    with pytest.raises(RedisUnavailableError) as raised:
        raise_typed(refused)
    assert raised.value.__cause__ is refused
    assert isinstance(raised.value, RedisConnectionError)  # what callers used to catch


def test_an_outage_is_timed_from_its_first_failure_until_a_success() -> None:
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    assert outage.failed() == 0.0
    now[0] = 103.5
    assert outage.failed() == 3.5
    outage.ended()
    assert outage.failed() == 0.0
