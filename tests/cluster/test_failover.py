"""A primary killed under load, on a Redis Cluster with one replica per primary.

Producers add custom-id jobs and workers (the loop behind ``queue.process``) run them, every
party on its own ``RedisCluster`` client and keeping a ledger. The primary serving the queue's
slot is SIGKILLed mid-run; its replica is promoted; the same producers and workers must carry
on, with no restart. The ledgers are then checked (``tests.reliability.accounting``).

Redis Cluster replicates asynchronously: a write the primary acknowledged but had not yet
sent to its replica when it died is gone. So this test does not assert that nothing was lost;
it asserts that every lost job is one whose enqueue was acknowledged in the last second before
the kill (or during the failover), that nothing unexpected appeared, and that every job run
twice was delivered or acked in that same window; and it prints the figures.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from pyqcore import BaseQueue
from tests.reliability.failover import (
    FailoverRun,
    LedgerSampler,
    Offsets,
    Records,
    check_failover,
    events_between,
    ids_of,
    kill_while_unreplicated,
    stage_failover,
)
from tests.support import LocalRedis, LocalRedisCluster

QUEUE = "failover"


@pytest.fixture
def replicated() -> Iterator[LocalRedisCluster]:
    """Three primaries with one replica each (1 s node timeout)."""
    with LocalRedisCluster(3, replicas=1) as cluster:
        yield cluster


@pytest.mark.parametrize("fault", ["kill", "cut-then-kill"])
def test_producers_and_workers_carry_on_through_a_primary_failover(
    replicated: LocalRedisCluster, tmp_path: Path, pyqcore_log: Records,
    thread_crashes: list[str], fault: str,
) -> None:
    """``kill``: SIGKILL the queue's primary. ``cut-then-kill``: cut its replication link
    first and kill it before the replica reconnects, so the writes of that gap are lost (on
    loopback a plain SIGKILL loses nothing: what the primary sent is already in the kernel's
    socket buffers, and reaches the replica)."""
    seed = int(os.environ.get("PYQCORE_SEED", random.randrange(2**32)))
    print(f"PYQCORE_SEED={seed}")
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()

    def connect() -> RedisCluster:
        return replicated.client(socket_timeout=2.0, socket_connect_timeout=1.0)

    probe = connect()
    ready_key = BaseQueue(probe, name=QUEUE).keys.key("ready")
    probe.close()
    slot = key_slot(ready_key.encode())

    run = FailoverRun(connect, ledger_dir, random.Random(seed), queue=QUEUE)
    sampler = LedgerSampler(ledger_dir).start()

    def kill() -> tuple[LocalRedis, Offsets | None]:
        victim = replicated.primary_of(ready_key)
        if fault == "cut-then-kill":
            return victim, kill_while_unreplicated(victim, replicated.replicas_of(victim),
                                                   sampler)
        assert replicated.kill_primary_of(ready_key) is victim
        return victim, None

    failover = stage_failover(
        run, sampler, kill,
        lambda victim: replicated.wait_for_failover(slot, victim, timeout=20.0))
    assert thread_crashes == []
    account = check_failover(run, failover, sampler, pyqcore_log)
    window = failover.window(sampler)
    if failover.cut is not None:
        unreplicated = ids_of(events_between(ledger_dir, failover.cut, failover.at_kill),
                              "enqueued")
        print(f"enqueues acknowledged while the replication link was cut: {len(unreplicated)}")
    # only writes acknowledged just before the kill (or during the failover) can be lost
    assert account.lost <= ids_of(window, "enqueued")
    if failover.cut is not None:  # ... and with the link cut, only those acknowledged after it
        assert account.lost <= ids_of(events_between(ledger_dir, failover.cut, failover.at_ok),
                                      "enqueued")
