"""A cancel racing a reserve, many rounds, two threads released together: a job is either
cancelled (True, and never delivered) or delivered (and cancel answers False), never both and
never neither. Sync threads on one server and a cluster (the asyncio API sends the same
scripts)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from pyqcore import BaseQueue, Job
from pyqcore.sync.driver import Client
from tests.conftest import BOTH_BACKENDS

pytestmark = BOTH_BACKENDS

ROUNDS = 200


def test_a_cancel_racing_a_reserve_never_both_cancels_and_delivers(client: Client) -> None:
    queue = BaseQueue(client, name="race")
    won = {True: 0, False: 0}

    def reserve(barrier: threading.Barrier) -> list[Job]:
        barrier.wait()
        return queue.reserve()

    def cancel(barrier: threading.Barrier, job_id: str) -> bool:
        barrier.wait()
        return queue.cancel(job_id)

    with ThreadPoolExecutor(2) as pool:
        for round_ in range(ROUNDS):
            job_id = queue.add(round_)
            barrier = threading.Barrier(2)
            leased = pool.submit(reserve, barrier)
            cancelled = pool.submit(cancel, barrier, job_id).result(30)
            delivered = [job.id for job in leased.result(30)]
            assert not (cancelled and delivered), f"round {round_}: cancelled and delivered"
            assert cancelled or delivered == [job_id], f"round {round_}: neither"
            won[cancelled] += 1
            queue.ack(leased.result())
    assert queue.counts() == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}
    assert sum(won.values()) == ROUNDS
