"""Client-side timeouts: Redis stalls (``DEBUG SLEEP``, the whole event loop blocked, as a slow
script, a fork or a swapping host would) for longer than the workers' and producers'
``socket_timeout``, several times while they run. Every call in flight times out on the client,
often after Redis has already run it (the reply is what is lost). Nothing may be lost, no job
may stay leased, no worker may die or crash-loop: the ledger checker accounts for every job."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyqcore import BaseQueue
from tests.reliability.accounting import read_history
from tests.reliability.conftest import make_scenario
from tests.reliability.scenario import Scenario, wait_until
from tests.reliability.test_faults import finish, start_load
from tests.support import LocalRedis

CLIENT_TIMEOUT = 0.2  # seconds: the workers' and producers' socket_timeout
STALL = (0.3, 0.6)  # seconds Redis is frozen per stall: always past the client timeout
STALLS = 3


class ShortTimeoutRedis(LocalRedis):
    """A server (``DEBUG`` allowed from loopback) whose URL gives every client of the scenario
    a ``socket_timeout`` of CLIENT_TIMEOUT (URL options override redis-py's keyword ones)."""

    def __init__(self) -> None:
        super().__init__("--enable-debug-command", "local")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?socket_timeout={CLIENT_TIMEOUT}"


@pytest.fixture
def stall_scenario(ledger_dir: Path, rng: random.Random) -> Iterator[Scenario]:
    with ShortTimeoutRedis() as server:
        yield from make_scenario(server, ledger_dir, rng)


def test_redis_stalls_past_the_client_timeout_lose_nothing_and_leave_nothing_leased(
    stall_scenario: Scenario,
) -> None:
    scenario = stall_scenario
    scenario.visibility_timeout = 1.0
    start_load(scenario, workers=2)
    admin = scenario.server.client(socket_timeout=5.0)  # outlives the stalls it causes
    wait_until(lambda: all((scenario.ledger_dir / f"{w}.ready").exists()
                           for w in scenario.workers), 10, "the workers to start")

    def stall() -> None:  # returns when Redis runs again
        seconds = round(scenario.rng.uniform(*STALL), 2)
        with scenario.outage():
            admin.execute_command("DEBUG", "SLEEP", seconds)  # type: ignore[no-untyped-call]

    stalls = 0
    for _ in range(STALLS):  # while the producers run (they take longer than this)
        time.sleep(scenario.rng.uniform(0.2, 0.5))  # the fault schedule, not a synchronisation
        assert scenario.producing(), "the producers finished before the last stall"
        stall()
        stalls += 1
    scenario.wait_producers(30)
    queue = BaseQueue(admin, name=scenario.queue)
    # with the real clock: the live workers reclaim every lease a lost reply left behind
    wait_until(lambda: queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0},
               15, "every job to be acked")
    assert all(p.poll() is None for p in scenario.workers.values()), "a worker died"
    # the stalls really outlasted the clients' timeout: round trips were cut off mid-call
    events = read_history(scenario.ledger_dir)
    timed_out = {e.job_id for e in events if e.event == "ack?"}
    attempts = Counter(e.job_id for e in events if e.event == "attempt")
    re_added = {job_id for job_id, n in attempts.items() if n > 1}
    print(f"stalls={stalls} jobs whose ack timed out={len(timed_out)} "
          f"jobs whose add timed out (and was retried)={len(re_added)}")
    assert timed_out and re_added
    # A job runs twice only when a reply was lost: an ack that ran but whose reply timed out
    # (the lease then lapses: another delivery), or an add that ran but whose reply timed out
    # and was retried after a worker had already finished the job (an idempotent job_id only
    # dedups while the job is still in Redis). The account checks each duplicate against its
    # own job's history: a lease open during a stall, or a retried add.
    finish(scenario)
    twice = scenario.account().duplicated
    print(f"run twice: {len(twice)} ({len(twice & re_added)} re-added after they were done, "
          f"{len(twice & timed_out)} after an ack reply was lost)")
    admin.close()
