"""What the tests and the benchmarks share: throwaway Redis servers and clusters
(``tests.support.servers``), Sentinel groups (``tests.support.sentinels``), and the session's
check that none is left running."""

from tests.support.servers import (
    SETPRIV,
    LocalRedis,
    LocalRedisCluster,
    free_port,
    free_ports,
    reap_leftover_servers,
    redis_binary,
    tls_unsupported,
    wait_until,
)

__all__ = ["SETPRIV", "LocalRedis", "LocalRedisCluster", "free_port", "free_ports",
           "reap_leftover_servers", "redis_binary", "tls_unsupported", "wait_until"]
