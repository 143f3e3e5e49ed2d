"""Clusters of 1 and 2 primaries (built by hand: redis-cli --cluster create wants 3), which the
scaling benchmark compares with 3."""

from __future__ import annotations

import pytest

from pyqcore import BaseQueue, ConfigurationError
from tests.support import LocalRedisCluster


def test_two_primaries_serve_every_slot_and_share_a_partitioned_queue() -> None:
    with LocalRedisCluster(primaries=2) as cluster:
        client = cluster.client()
        assert len(client.get_primaries()) == 2  # type: ignore[no-untyped-call]
        queue = BaseQueue(client, name="spread", partitions=8, handler=lambda job: None)
        queue.add_batch(range(80))
        holding = [node.port for node in cluster.nodes
                   if node.client().keys("pyqcore:{spread#*}:jobs")]
        assert len(holding) == 2
        assert queue.process(concurrency=2, burst=True, install_signal_handlers=False).acked == 80
        client.close()


def test_replicas_need_three_primaries() -> None:
    with pytest.raises(ConfigurationError, match="replicas"):
        LocalRedisCluster(primaries=2, replicas=1)
